import LoRAFuse
import LoRAFuseModels
/// The FLUX transformer with LoRAs: the model, the LoRAs applied hot and AutoLoRA's gated
/// fusion, turned into the `FluxLinearAdapters` the graph builder (`FluxDiT`) takes.
public struct FluxTransformer: Sendable {
    public let model: FluxModel
    /// LoRAs applied hot: each Linear they touch adds `scale · (α/r) · B(A x)` beside the
    /// base matmul (one `lowRankUpdate` node per LoRA), base weights untouched. Change them
    /// and build a new graph: weights already on a device stay there.
    public var adapters: [LoRAAdapter]
    /// AutoLoRA gated fusion: its LoRAs go through a `lowRankGate` node on every layer with a
    /// merger, and hot (summed) on the layers without one, as in DiffSynth.
    public var autolora: AutoLoRAFusion?
    public var config: FluxConfig { model.config }

    /// The transformer of `model` with `adapters` applied hot and, optionally, AutoLoRA fusion.
    public init(model: FluxModel, adapters: [LoRAAdapter] = [], autolora: AutoLoRAFusion? = nil) {
        self.model = model
        self.adapters = adapters
        self.autolora = autolora
    }

    /// The graph for `batch` samples of `textLength` + `imageLength` tokens. Its inputs are
    /// `FluxInputs.bindings`; its one output is `sample`.
    public func graph(batch: Int, textLength: Int, imageLength: Int) throws -> Graph {
        try FluxDiT(model: model, adapters: linearAdapters()).graph(batch: batch, textLength: textLength, imageLength: imageLength)
    }

    /// Every Linear's branches: one low-rank update per hot LoRA module (labelled `lora<i>`,
    /// i counting the hot adapters, then AutoLoRA's), and one gate per AutoLoRA merger.
    public func linearAdapters() -> FluxLinearAdapters {
        var result = FluxLinearAdapters()
        func addHot(_ index: Int, _ module: LoRAModule, scale: Float, set: WeightSet) {
            result.lowRank[module.layer, default: []].append(.init(label: "lora\(index)", down: module.down, up: module.up, scale: scale, weightSet: set))
        }
        for (index, adapter) in adapters.enumerated() where adapter.scale != 0 {
            for module in adapter.file.modules {
                addHot(index, module, scale: adapter.scale * module.scale, set: adapter.file.weightSet)
            }
        }
        guard let autolora else { return result }
        let covered = Set(autolora.mergers.mergers.values.flatMap(\.layers))
        for (first, merger) in autolora.mergers.mergers {
            guard let factors = autolora.factors[first] else { continue }
            result.gates[first] = .init(name: merger.name, layers: merger.layers, parameters: merger.parameters,
                                        parametersSet: autolora.mergers.weightSet, down: factors.down, up: factors.up,
                                        ranks: factors.ranks, factorsSet: autolora.weightSet)
        }
        // Layers without a merger take the LoRAs hot, as DiffSynth's plain LoRA Linears do.
        for (offset, adapter) in autolora.adapters.enumerated() {
            for module in adapter.file.modules where !covered.contains(module.layer) {
                let scale = adapter.scale * AutoLoRAFusion.fileScale(module, in: adapter.file)
                if scale != 0 { addHot(adapters.count + offset, module, scale: scale, set: adapter.file.weightSet) }
            }
        }
        return result
    }
}
