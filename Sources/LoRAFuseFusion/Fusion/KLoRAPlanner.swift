import Foundation
import LoRAFuse
import LoRAFuseModels

/// Why two LoRAs cannot be fused.
public enum FusionError: Error, Sendable, CustomStringConvertible, Equatable {
    case noSharedLayers(content: String, style: String)
    /// The two LoRAs change one layer with different shapes: they were made for different models.
    case differentModels(layer: String, content: Shape, style: Shape)
    case invalidOption(String)

    public var description: String {
        switch self {
        case let .noSharedLayers(content, style):
            "\(content) and \(style) have no layer in common: K-LoRA and EST-LoRA choose between LoRAs for the same model on the layers both touch"
        case let .differentModels(layer, content, style):
            "the LoRAs were made for different models: layer \(layer) is \(content) in the content LoRA and \(style) in the style LoRA"
        case let .invalidOption(message): message
        }
    }
}

/// Computes a `KLoRAPlan` on a backend: per unit and LoRA one `lowRankTopKAbsSum` node
/// (ΔW = (α/r)·B·A is formed inside the kernel, in tiles on the CPU), units batched into
/// graphs of bounded size. Plans are cached on
/// disk by the two files' content hashes, so a pair is measured once.
public struct KLoRAPlanner {
    public let backend: any Backend
    /// Where plans are cached (nil: no cache).
    public var cacheFolder: URL?
    /// ΔW bytes per graph.
    public var groupBytes = 512 << 20

    /// A planner computing on `backend`, caching plans by file hash in `cacheFolder` (nil: no cache).
    public init(backend: any Backend, cacheFolder: URL? = KLoRAPlanner.defaultCacheFolder) {
        self.backend = backend
        self.cacheFolder = cacheFolder
    }

    /// `$LORAFUSE_CACHE/klora`, else `~/.cache/lorafuse/klora`.
    public static var defaultCacheFolder: URL? { PlanCache<KLoRAPlan>.defaultFolder("klora") }

    /// The units: layers both LoRAs touch, grouped where both files fuse them the same way.
    static func units(content: LoRAFile, style: LoRAFile, order: [String]) -> [[String]] {
        let contentModules = Dictionary(content.modules.map { ($0.layer, $0.sourceModule) }, uniquingKeysWith: { first, _ in first })
        let styleModules = Dictionary(style.modules.map { ($0.layer, $0.sourceModule) }, uniquingKeysWith: { first, _ in first })
        let shared = order.filter { contentModules[$0] != nil && styleModules[$0] != nil }
        var done = Set<String>()
        var units: [[String]] = []
        for layer in shared where !done.contains(layer) {
            let byContent = shared.filter { contentModules[$0] == contentModules[layer] }
            let byStyle = shared.filter { styleModules[$0] == styleModules[layer] }
            let unit = byContent == byStyle ? byContent : [layer]
            units.append(unit)
            done.formUnion(unit)
        }
        return units
    }

    /// The plan for `content` and `style`; `config` gives the layer order (without it, the
    /// files' layers in natural order).
    public func plan(content: LoRAFile, style: LoRAFile, config: FluxConfig? = nil,
                     progress: ((Int, Int) -> Void)? = nil) throws -> KLoRAPlan {
        let contentHash = try ContentHash.of(path: content.path), styleHash = try ContentHash.of(path: style.path)
        let cache = PlanCache<KLoRAPlan>(folder: cacheFolder)
        if let cached = cache.read(contentHash, styleHash, isCurrent: { $0.version == KLoRAPlan.formatVersion }) { return cached }
        let order = config?.linearLayers.map(\.name) ?? naturallyOrdered(Set((content.modules + style.modules).map(\.layer)))
        let unitLayers = Self.units(content: content, style: style, order: order)
        guard !unitLayers.isEmpty else { throw FusionError.noSharedLayers(content: content.path, style: style.path) }
        let contentModules = Dictionary(content.modules.map { ($0.layer, $0) }, uniquingKeysWith: { first, _ in first })
        let styleModules = Dictionary(style.modules.map { ($0.layer, $0) }, uniquingKeysWith: { first, _ in first })
        let shared = Set(unitLayers.joined())
        for layer in unitLayers.joined() {
            let contentShape = contentModules[layer]!.deltaShape, styleShape = styleModules[layer]!.deltaShape
            guard contentShape == styleShape else { throw FusionError.differentModels(layer: layer, content: contentShape, style: styleShape) }
        }
        // ΔW entries of a unit (the same for both LoRAs, checked above).
        let entries = unitLayers.map { layers in layers.reduce(0) { $0 + contentModules[$1]!.deltaShape.elementCount } }

        var units: [KLoRAPlan.Unit] = []
        for batchRange in boundedBatches(unitLayers.count, limit: groupBytes, bytes: { 8 * entries[$0] }) {
            var graph = Graph()
            var batch: [KLoRAPlan.Unit] = []
            for index in batchRange {
                let layers = unitLayers[index]
                let contentRank = contentModules[layers[0]]!.rank, styleRank = styleModules[layers[0]]!.rank
                let k = min(contentRank * styleRank, entries[index])
                for modules in [contentModules, styleModules] {
                    let factors = layers.map { layer in
                        let module = modules[layer]!
                        return (graph.parameter("\(layer).up", module.up), graph.parameter("\(layer).down", module.down), module.scale)
                    }
                    graph.markOutput(try graph.lowRankTopKAbsSum(factors, k: k))
                }
                batch.append(KLoRAPlan.Unit(layers: layers, contentRank: contentRank, styleRank: styleRank, k: k,
                                            contentTopK: 0, styleTopK: 0, contentAbsSum: 0, styleAbsSum: 0))
            }
            let outputs = try backend.execute(graph, inputs: [:]).outputs
            for (index, var unit) in batch.enumerated() {
                let contentStats = outputs[2 * index].floats(), styleStats = outputs[2 * index + 1].floats()
                unit.contentTopK = Double(contentStats[0])
                unit.contentAbsSum = Double(contentStats[1])
                unit.styleTopK = Double(styleStats[0])
                unit.styleAbsSum = Double(styleStats[1])
                units.append(unit)
            }
            progress?(batchRange.upperBound, unitLayers.count)
        }
        let plan = KLoRAPlan(contentHash: contentHash, styleHash: styleHash, units: units,
                             contentOnly: order.filter { contentModules[$0] != nil && !shared.contains($0) },
                             styleOnly: order.filter { styleModules[$0] != nil && !shared.contains($0) })
        cache.write(plan, contentHash, styleHash)
        return plan
    }
}
