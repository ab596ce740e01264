import Foundation
import LoRAFuse
import LoRAFuseModels

/// Computes an `ESTLoRAPlan` on a backend. Per fused layer and LoRA, the energy in rank space,
/// ‖B·A‖²_F = Σ (BᵀB ⊙ AAᵀ) (two r × r Gram matrices, their product summed by two matmuls
/// with a ones vector; no out × in matrix), and Σ|B·A| for γ from a `lowRankTopKAbsSum`
/// node (the product formed in tiles inside the kernel). Layers are batched into graphs of
/// bounded size; plans are cached on disk by the two files' content hashes.
public struct ESTLoRAPlanner {
    public let backend: any Backend
    /// Where plans are cached (nil: no cache).
    public var cacheFolder: URL?
    /// B·A bytes per graph (the abs-sum kernels' working set).
    public var groupBytes = 512 << 20

    /// A planner computing on `backend`, caching plans by file hash in `cacheFolder` (nil: no cache).
    public init(backend: any Backend, cacheFolder: URL? = ESTLoRAPlanner.defaultCacheFolder) {
        self.backend = backend
        self.cacheFolder = cacheFolder
    }

    /// `$LORAFUSE_CACHE/estlora`, else `~/.cache/lorafuse/estlora`.
    public static var defaultCacheFolder: URL? { PlanCache<ESTLoRAPlan>.defaultFolder("estlora") }

    /// The plan for `content` and `style`; `config` gives the call order (without it, the
    /// files' layers in natural order).
    public func plan(content: LoRAFile, style: LoRAFile, config: FluxConfig? = nil) throws -> ESTLoRAPlan {
        let contentHash = try ContentHash.of(path: content.path), styleHash = try ContentHash.of(path: style.path)
        let cache = PlanCache<ESTLoRAPlan>(folder: cacheFolder)
        if let cached = cache.read(contentHash, styleHash, isCurrent: { $0.version == ESTLoRAPlan.formatVersion }) { return cached }

        let contentModules = Dictionary(content.modules.map { ($0.layer, $0) }, uniquingKeysWith: { first, _ in first })
        let styleModules = Dictionary(style.modules.map { ($0.layer, $0) }, uniquingKeysWith: { first, _ in first })
        let order = config?.linearCallOrder ?? naturallyOrdered(Set(contentModules.keys).union(styleModules.keys))
        let shared = order.filter { contentModules[$0] != nil && styleModules[$0] != nil }
        guard !shared.isEmpty else { throw FusionError.noSharedLayers(content: content.path, style: style.path) }
        for layer in shared {
            let contentShape = contentModules[layer]!.deltaShape, styleShape = styleModules[layer]!.deltaShape
            guard contentShape == styleShape else { throw FusionError.differentModels(layer: layer, content: contentShape, style: styleShape) }
        }

        var layers: [ESTLoRAPlan.Layer] = []
        let entries = shared.map { contentModules[$0]!.deltaShape.elementCount }
        for batch in boundedBatches(shared.count, limit: groupBytes, bytes: { 8 * entries[$0] }) {
            var graph = Graph()
            var ones: [Int: Tensor] = [:]
            func energy(up: Tensor, down: Tensor, rank: Int) throws -> Tensor {
                if ones[rank] == nil { ones[rank] = graph.parameter("ones.\(rank)", HostTensor(shape: [rank, 1], floats: [Float](repeating: 1, count: rank))) }
                let gramUp = try graph.matmul(try graph.cast(up, to: .float32), up, transposeA: true)       // BᵀB [r, r]
                let gramDown = try graph.matmul(try graph.cast(down, to: .float32), down, transposeB: true) // AAᵀ [r, r]
                let rows = try graph.matmul(try graph.mul(gramUp, gramDown), ones[rank]!)                   // [r, 1]
                return try graph.matmul(ones[rank]!, rows, transposeA: true)                                 // [1, 1]
            }
            for layer in shared[batch] {
                for module in [contentModules[layer]!, styleModules[layer]!] {
                    let up = graph.parameter("\(layer).up", module.up), down = graph.parameter("\(layer).down", module.down)
                    graph.markOutput(try energy(up: up, down: down, rank: module.rank))
                    graph.markOutput(try graph.lowRankTopKAbsSum([(up, down, 1)], k: 1))
                }
            }
            let outputs = try backend.execute(graph, inputs: [:]).outputs
            for (offset, layer) in shared[batch].enumerated() {
                let values = (0..<4).map { outputs[4 * offset + $0].floats() }
                layers.append(ESTLoRAPlan.Layer(name: layer, contentEnergy: Double(values[0][0]), styleEnergy: Double(values[2][0]),
                                                contentAbsSum: Double(values[1][1]), styleAbsSum: Double(values[3][1])))
            }
        }
        let sharedSet = Set(shared)
        let plan = ESTLoRAPlan(contentHash: contentHash, styleHash: styleHash, layers: layers,
                               gamma: ESTLoRAPlan.gamma(contentAbsSums: layers.map(\.contentAbsSum), styleAbsSums: layers.map(\.styleAbsSum)),
                               contentOnly: order.filter { contentModules[$0] != nil && !sharedSet.contains($0) },
                               styleOnly: order.filter { styleModules[$0] != nil && !sharedSet.contains($0) })
        cache.write(plan, contentHash, styleHash)
        return plan
    }
}
