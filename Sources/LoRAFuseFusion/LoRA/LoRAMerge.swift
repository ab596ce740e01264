import LoRAFuse
import LoRAFuseModels
/// Weights with some Linears replaced by merged copies; everything else is read from the
/// base checkpoint as before.
public struct MergedFluxWeights: FluxWeights {
    public let base: any FluxWeights
    /// Merged `<layer>.weight` tensors by diffusers name.
    public let merged: [String: HostTensor]

    /// The base weights with the tensors in `merged` replacing theirs.
    public init(base: any FluxWeights, merged: [String: HostTensor]) {
        self.base = base
        self.merged = merged
    }

    public var description: String { base.description + " + \(merged.count) merged LoRA layer(s)" }
    public var finalModulationShiftFirst: Bool { base.finalModulationShiftFirst }

    /// The merged tensor where there is one, else the base's.
    /// A merged weight holds its full value (the base's scale applied); the others keep theirs.
    public func weightScale(_ name: String) throws -> Float? {
        merged[name] == nil ? try base.weightScale(name) : nil
    }

    public func tensor(_ name: String, shape: Shape) throws -> HostTensor {
        guard let tensor = merged[name] else { return try base.tensor(name, shape: shape) }
        guard tensor.shape == shape else {
            throw ModelError.shapeMismatch(name: name, expected: shape, actual: tensor.shape, source: description)
        }
        return tensor
    }
}

extension FluxModel {
    /// The model with `adapters` merged: W' = W + Σᵢ sᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ for every Linear they
    /// touch, computed on `backend` in float32 and stored in W's dtype (as diffusers'
    /// `fuse_lora`); a float8 W (scale applied) becomes BF16, so only the touched layers
    /// grow, and fp8 cannot lose the LoRA's small updates to its 3-bit mantissa. Layers are merged in groups so at most ~`groupBytes` of results are in
    /// flight beyond the merged weights themselves.
    public func merging(_ adapters: [LoRAAdapter], on backend: any Backend, groupBytes: Int = 256 << 20,
                        progress: ((Int, Int) -> Void)? = nil) throws -> FluxModel {
        var modulesByLayer: [String: [(LoRAModule, Float)]] = [:]
        for adapter in adapters where adapter.scale != 0 {
            for module in adapter.file.modules { modulesByLayer[module.layer, default: []].append((module, adapter.scale * module.scale)) }
        }
        let layers = config.linearLayers.filter { modulesByLayer[$0.name] != nil }
        var merged: [String: HostTensor] = [:]
        for batch in boundedBatches(layers.count, limit: groupBytes, bytes: { layers[$0].inFeatures * layers[$0].outFeatures * 4 }) {
            var graph = Graph()
            var names: [String] = []
            for layer in layers[batch] {
                let name = "\(layer.name).weight"
                let base = try weights.tensor(name, shape: [layer.outFeatures, layer.inFeatures])
                var sum = try graph.cast(graph.parameter(name, base), to: .float32)
                if let scale = try weights.weightScale(name) { sum = try graph.scale(sum, scale) }
                for (module, scale) in modulesByLayer[layer.name]! {
                    var up = try graph.cast(graph.parameter("\(layer.name).up", module.up), to: .float32)
                    up = try graph.scale(up, scale)  // [out, r]: cheaper to scale than the product
                    let delta = try graph.matmul(up, graph.parameter("\(layer.name).down", module.down))
                    sum = try graph.add(sum, delta)
                }
                graph.markOutput(try graph.cast(sum, to: DType.weightTypes.contains(base.dtype) ? base.dtype : .bfloat16))
                names.append(name)
            }
            let outputs = try backend.execute(graph, inputs: [:]).outputs
            for (name, tensor) in zip(names, outputs) { merged[name] = tensor }
            progress?(batch.upperBound, layers.count)
        }
        return FluxModel(config: config, weights: MergedFluxWeights(base: weights, merged: merged))
    }
}
