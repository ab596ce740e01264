import LoRAFuse
import LoRAFuseModels
/// AutoLoRA's fusion weights (arXiv 2508.02107; DiffSynth-Studio `FluxLoraPatcher`): one
/// `LoraMerger` per LoRA-carrying Linear of DiffSynth's FLUX layout, read from a checkpoint
/// in the layout of `LoRAFusion-preview-FLUX.1-dev`:
/// `model_dict.<layer, '.' → '___'>.{weight_base, weight_lora, weight_cross, weight_out, bias,
/// norm_base.weight, norm_base.bias, norm_lora.weight, norm_lora.bias}`.
///
/// DiffSynth fuses q, k, v (and, in single blocks, q, k, v and the MLP input) into one
/// Linear, so its gates and LayerNorms run over the concatenated output: a merger here
/// covers the diffusers Linears of that fused layer, in order, and gates their concatenation.
public struct AutoLoRAMergers: Sendable {
    /// One merger: the gate of one DiffSynth layer (a fused qkv, qkv+MLP or a single Linear).
    public struct Merger: Sendable {
        /// DiffSynth's layer name, e.g. `blocks.0.attn.a_to_qkv`.
        public let name: String
        /// The diffusers Linears whose outputs it gates, concatenated in this order.
        public let layers: [String]
        /// [9, D] float32: weight_base, weight_lora, weight_cross, weight_out, bias,
        /// norm_base weight and bias, norm_lora weight and bias.
        public let parameters: HostTensor
    }

    public let path: String
    /// By the first diffusers Linear of each merger.
    public let mergers: [String: Merger]
    /// The mergers' parameters as graphs bind them.
    public let weightSet = WeightSet(name: "AutoLoRA mergers")

    static let fields = ["weight_base", "weight_lora", "weight_cross", "weight_out", "bias",
                         "norm_base.weight", "norm_base.bias", "norm_lora.weight", "norm_lora.bias"]

    /// DiffSynth's merger names for a model: per double block the image side (a) then the
    /// text side (b), per single block three (the published checkpoint's 304 for FLUX.1-dev).
    public static func layerNames(layerCount: Int, singleLayerCount: Int) -> [String] {
        var names: [String] = []
        for index in 0..<layerCount {
            for side in ["a", "b"] {
                names += ["attn.\(side)_to_qkv", "attn.\(side)_to_out", "ff_\(side).0", "ff_\(side).2", "norm1_\(side).linear"]
                    .map { "blocks.\(index).\($0)" }
            }
        }
        for index in 0..<singleLayerCount {
            names += ["to_qkv_mlp", "proj_out", "norm.linear"].map { "single_blocks.\(index).\($0)" }
        }
        return names
    }

    /// Reads `path` for a model of `config`: each merger present must have all nine fields
    /// with the width of its (fused) layer; layers with no merger key are not gated; a key
    /// that fits no layer of the model is an error naming it.
    public static func load(path: String, config: FluxConfig) throws -> AutoLoRAMergers {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw LoRAError.notALoRA(path: path, reason: "fusion weights: \(error)") }
        let widths = Dictionary(uniqueKeysWithValues: config.linearLayers.map { ($0.name, $0.outFeatures) })
        var expected = Set<String>()
        var mergers: [String: Merger] = [:]
        for name in layerNames(layerCount: config.layerCount, singleLayerCount: config.singleLayerCount) {
            guard let target = LoRANaming.target(of: name) else { continue }
            let layers = target.parts.map(\.layer)
            let width = layers.reduce(0) { $0 + (widths[$1] ?? 0) }
            let prefix = "model_dict.\(name.replacingOccurrences(of: ".", with: "___"))."
            // A layer without any merger key has no merger: its LoRAs run hot, as in DiffSynth
            // (enable_lora_merger only patches the layers its patcher lists).
            guard fields.contains(where: { file.contains(prefix + $0) }) else { continue }
            var values = [Float]()
            values.reserveCapacity(9 * width)
            for field in fields {
                let key = prefix + field
                expected.insert(key)
                guard file.contains(key) else {
                    throw LoRAError.notALoRA(path: path, reason: "fusion weights: no '\(key)' for layer \(name) (\(layers.joined(separator: ", ")))")
                }
                let tensor = try file.tensor(named: key)
                guard tensor.shape.dimensions == [width], DType.weightTypes.contains(tensor.dtype) else {
                    throw LoRAError.shapeMismatch(path: path, key: key, actual: tensor.shape,
                                                  expected: "[\(width)] of F32/F16/BF16 for layer \(name) (\(layers.joined(separator: " + ")))")
                }
                values += tensor.floats()
            }
            mergers[layers[0]] = Merger(name: name, layers: layers, parameters: HostTensor(shape: [9, width], floats: values))
        }
        let extra = file.names.filter { !expected.contains($0) }.sorted()
        guard extra.isEmpty else {
            throw LoRAError.notALoRA(path: path, reason: "fusion weights: \(extra.count) key(s) that fit no layer of this model: "
                + extra.prefix(8).joined(separator: ", ") + (extra.count > 8 ? ", …" : ""))
        }
        return AutoLoRAMergers(path: path, mergers: mergers)
    }
}

/// AutoLoRA gated fusion of N LoRAs: on every layer of a merger that at least one LoRA
/// touches, y = y₀ + Σᵢ w_out ⊙ gᵢ ⊙ dᵢ (one `lowRankGate` node); other layers run plain.
/// dᵢ = sᵢ · c · Bᵢ(Aᵢ x) with DiffSynth's `load_lora(alpha = sᵢ)` semantics: c = α/r only
/// for files that store `.alpha` tensors (kohya), else 1 — DiffSynth ignores peft metadata.
public struct AutoLoRAFusion: Sendable {
    public let mergers: AutoLoRAMergers
    public let adapters: [LoRAAdapter]
    /// The LoRAs touching one merger's (fused) layer as one low-rank pair for `lowRankGate`:
    /// `down` stacks every LoRA's A over every part [ΣR, in] (so x·downᵀ is one matmul), `up`
    /// [Σout, ΣR] holds each LoRA's B block-diagonally over the parts with its scale folded
    /// in (zero where a LoRA misses a part, as DiffSynth fuses them); `ranks` are the LoRAs'
    /// column counts in order. Built once, so devices keep them resident.
    public struct GateFactors: Sendable {
        public let ranks: [Int]
        public let down: HostTensor
        public let up: HostTensor
    }

    /// Per merger (by its first Linear), the factors of the LoRAs that touch it.
    public let factors: [String: GateFactors]
    /// The factors as graphs bind them, one unit a backend makes resident.
    public let weightSet = WeightSet(name: "AutoLoRA gate factors")

    /// The gated fusion of `adapters` through `mergers`, their factors stacked per merger; fails when a LoRA touches a layer the merger does not know.
    public init(mergers: AutoLoRAMergers, adapters: [LoRAAdapter], config: FluxConfig) throws {
        guard (1...Graph.maximumGateInputs).contains(adapters.count) else {
            throw FusionError.invalidOption("--fusion autolora takes 1 to \(Graph.maximumGateInputs) LoRAs, got \(adapters.count)")
        }
        self.mergers = mergers
        self.adapters = adapters
        let widths = Dictionary(uniqueKeysWithValues: config.linearLayers.map { ($0.name, ($0.inFeatures, $0.outFeatures)) })
        var factors: [String: GateFactors] = [:]
        for (first, merger) in mergers.mergers {
            guard let inFeatures = widths[first]?.0 else { continue }
            let outs = merger.layers.map { widths[$0]?.1 ?? 0 }
            let totalOut = outs.reduce(0, +)
            // Per touching LoRA: its adapter and its module (or nil) on each part.
            let touching: [(adapter: LoRAAdapter, parts: [LoRAModule?])] = adapters.compactMap { adapter in
                let parts = merger.layers.map { layer in adapter.file.modules.first { $0.layer == layer } }
                return parts.contains { $0 != nil } ? (adapter, parts) : nil
            }
            guard !touching.isEmpty else { continue }
            let ranks = touching.map { $0.parts.reduce(0) { $0 + ($1?.rank ?? 0) } }
            let totalRank = ranks.reduce(0, +)
            var down = [Float](repeating: 0, count: totalRank * inFeatures)
            var up = [Float](repeating: 0, count: totalOut * totalRank)
            var column = 0
            for (adapter, parts) in touching {
                var row = 0
                for (part, module) in parts.enumerated() {
                    defer { row += outs[part] }
                    guard let module else { continue }
                    let scale = adapter.scale * Self.fileScale(module, in: adapter.file)
                    let a = module.down.floats(), b = module.up.floats()
                    for r in 0..<module.rank { for i in 0..<inFeatures { down[(column + r) * inFeatures + i] = a[r * inFeatures + i] } }
                    for o in 0..<outs[part] { for r in 0..<module.rank { up[(row + o) * totalRank + column + r] = scale * b[o * module.rank + r] } }
                    column += module.rank
                }
            }
            factors[first] = GateFactors(ranks: ranks, down: HostTensor(shape: [totalRank, inFeatures], floats: down),
                                         up: HostTensor(shape: [totalOut, totalRank], floats: up))
        }
        self.factors = factors
    }
    /// The factor DiffSynth applies to a module's B·A besides the user's scale.
    package static func fileScale(_ module: LoRAModule, in file: LoRAFile) -> Float {
        file.alphaSource == .tensors ? module.scale : 1
    }
}
