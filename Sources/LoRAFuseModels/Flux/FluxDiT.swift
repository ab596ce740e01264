import LoRAFuse
/// What LoRAs and fusion methods add to the FLUX transformer's Linear layers, as tensors
/// and weight sets: the models part knows nothing of LoRA files or fusion methods.
/// `FluxTransformer` (LoRA and fusion) builds it from LoRA adapters and AutoLoRA mergers.
public struct FluxLinearAdapters: Sendable {
    /// A low-rank branch `y + scale · up(down x)` beside one Linear (a LoRA applied hot).
    public struct LowRank: Sendable {
        /// Names its parameters (`<label>.<layer>.down`, `.up`) and its node.
        public var label: String
        public var down: HostTensor
        public var up: HostTensor
        public var scale: Float
        /// The weight set the factors belong to (their file's).
        public var weightSet: WeightSet

        /// A branch `scale · up(down x)` named `label`, its factors in `weightSet`.
        public init(label: String, down: HostTensor, up: HostTensor, scale: Float, weightSet: WeightSet) {
            self.label = label
            self.down = down
            self.up = up
            self.scale = scale
            self.weightSet = weightSet
        }
    }

    /// Linears whose concatenated output goes through one `lowRankGate` (an AutoLoRA merger
    /// over DiffSynth's fused qkv or qkv+MLP): the base output, every LoRA's rank-space
    /// activations `x · downᵀ` and the gate parameters.
    public struct Gate: Sendable {
        public var name: String
        /// The Linears it covers, in the order their outputs are concatenated.
        public var layers: [String]
        /// [9, D] gate parameters, and their weight set.
        public var parameters: HostTensor
        public var parametersSet: WeightSet
        /// The LoRAs' factors stacked along the rank: down [Σr, in], up [out, Σr], ranks.
        public var down: HostTensor
        public var up: HostTensor
        public var ranks: [Int]
        public var factorsSet: WeightSet

        /// A gate named `name` over `layers`.
        public init(name: String, layers: [String], parameters: HostTensor, parametersSet: WeightSet, down: HostTensor, up: HostTensor,
                    ranks: [Int], factorsSet: WeightSet) {
            self.name = name
            self.layers = layers
            self.parameters = parameters
            self.parametersSet = parametersSet
            self.down = down
            self.up = up
            self.ranks = ranks
            self.factorsSet = factorsSet
        }
    }

    /// Branches by Linear name, applied in order.
    public var lowRank: [String: [LowRank]]
    /// Gates by the first Linear they cover.
    public var gates: [String: Gate]

    /// Adapters with these branches and gates.
    public init(lowRank: [String: [LowRank]] = [:], gates: [String: Gate] = [:]) {
        self.lowRank = lowRank
        self.gates = gates
    }

    /// No adapters: the base model.
    public static let none = FluxLinearAdapters()
}

/// Builds the FLUX.1 transformer forward pass as a graph (diffusers `FluxTransformer2DModel`,
/// `transformer_flux.py`): embeddings, double-stream blocks over [text, image], single-stream
/// blocks over the joint sequence, final AdaLN and projection. Output `sample` [B, L, C].
/// Each Linear takes the branches `adapters` lists for it.
public struct FluxDiT: Sendable {
    public let model: FluxModel
    public var adapters: FluxLinearAdapters
    public var config: FluxConfig { model.config }

    /// A builder for `model` with `adapters` on its Linears.
    public init(model: FluxModel, adapters: FluxLinearAdapters = .none) {
        self.model = model
        self.adapters = adapters
    }

    /// The graph for `batch` samples of `textLength` + `imageLength` tokens. Its inputs are
    /// `FluxInputs.bindings`; its one output is `sample`.
    public func graph(batch: Int, textLength: Int, imageLength: Int) throws -> Graph {
        var builder = Builder(config: config, weights: model.weights, weightSet: model.weightSet, adapters: adapters, graph: Graph())
        let sample = try builder.forward(batch: batch, textLength: textLength, imageLength: imageLength)
        builder.graph.markOutput(sample)
        return builder.graph
    }

    struct Builder {
        let config: FluxConfig
        let weights: any FluxWeights
        /// Where the model's weights are registered.
        let weightSet: WeightSet
        let adapters: FluxLinearAdapters
        var graph: Graph

        /// A weight as a parameter node; vectors (biases, norm weights) are cast to F32 for
        /// element-wise ops, matrices stay in their stored type for the matmul kernels.
        mutating func weight(_ name: String, _ shape: Shape) throws -> Tensor {
            let tensor = graph.parameter(name, try weights.tensor(name, shape: shape), in: weightSet)
            return shape.rank == 1 ? try graph.cast(tensor, to: .float32) : tensor
        }

        /// `x · Wᵀ + b` for the Linear `name` mapping `inFeatures` → `outFeatures`, with its
        /// low-rank branches (or through its gate).
        mutating func linear(_ x: Tensor, _ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Tensor {
            try linears(x, [name], inFeatures, [outFeatures])[0]
        }

        /// Several Linears of one input; when they form one gate (an AutoLoRA merger over
        /// DiffSynth's fused qkv or qkv+MLP), their concatenated output is gated at once.
        mutating func linears(_ x: Tensor, _ names: [String], _ inFeatures: Int, _ outFeatures: [Int]) throws -> [Tensor] {
            guard let merger = adapters.gates[names[0]], merger.layers == names else {
                return try zip(names, outFeatures).map { try hotLinear(x, $0, inFeatures, $1) }
            }
            let axis = x.shape.rank - 1
            let base = try fusedBase(x, names, inFeatures, outFeatures, axis: axis)
            // Every LoRA's rank-space activations in one matmul; the gate forms each dᵢ itself.
            let lowRank = try graph.matmul(x, graph.parameter("\(merger.name).lora.down", merger.down, in: merger.factorsSet), transposeB: true)
            let gate = try graph.lowRankGate(base, parameters: graph.parameter("\(merger.name).merger", merger.parameters, in: merger.parametersSet),
                                             lowRank: lowRank, up: graph.parameter("\(merger.name).lora.up", merger.up, in: merger.factorsSet),
                                             ranks: merger.ranks)
            graph.label(gate, "\(merger.name) gate")
            var start = 0
            return try outFeatures.map { width in
                defer { start += width }
                return names.count == 1 ? gate : try graph.slice(gate, axis: axis, start: start, end: start + width)
            }
        }

        /// y₀ of a fused layer: one matmul when the parts' weights and biases are consecutive
        /// rows of one tensor (BFL checkpoints), else the parts concatenated.
        mutating func fusedBase(_ x: Tensor, _ names: [String], _ inFeatures: Int, _ outFeatures: [Int], axis: Int) throws -> Tensor {
            let weightParts = try zip(names, outFeatures).map { try weights.tensor("\($0).weight", shape: [$1, inFeatures]) }
            let biasParts = try zip(names, outFeatures).map { try weights.tensor("\($0).bias", shape: [$1]) }
            if names.count > 1, let weight = Self.joined(weightParts), let bias = Self.joined(biasParts) {
                // Consecutive rows of one stored tensor: one scale (a scaled-fp8 tensor's) for all.
                let y = try scaledLinear(x, weight: graph.parameter(names.joined(separator: "+") + ".weight", weight, in: weightSet),
                                         scale: weights.weightScale("\(names[0]).weight"),
                                         bias: graph.cast(graph.parameter(names.joined(separator: "+") + ".bias", bias, in: weightSet), to: .float32))
                graph.label(y, names.joined(separator: "+"))
                return y
            }
            let bases = try zip(names, outFeatures).map { try baseLinear(x, $0, inFeatures, $1) }
            return bases.count == 1 ? bases[0] : try graph.concat(bases, axis: axis)
        }

        /// The parts as one tensor when they are consecutive rows of the same storage.
        static func joined(_ parts: [HostTensor]) -> HostTensor? {
            guard let first = parts.first else { return nil }
            var offset = first.byteOffset
            for part in parts {
                guard part.storage === first.storage, part.dtype == first.dtype, part.byteOffset == offset,
                      Array(part.shape.dimensions.dropFirst()) == Array(first.shape.dimensions.dropFirst()) else { return nil }
                offset += part.byteCount
            }
            let rows = parts.reduce(0) { $0 + $1.shape[0] }
            return HostTensor(type: TensorType(Shape([rows] + first.shape.dimensions.dropFirst()), first.dtype), storage: first.storage,
                              byteOffset: first.byteOffset)
        }

        /// `x · Wᵀ + b`, or `s · (x · Wᵀ) + b` for a scaled-fp8 weight (W stays narrow; the
        /// per-tensor scale goes on the product, which is cheaper than on W and exact alike).
        mutating func scaledLinear(_ x: Tensor, weight: Tensor, scale: Float?, bias: Tensor) throws -> Tensor {
            guard let scale, scale != 1 else { return try graph.linear(x, weight: weight, bias: bias) }
            return try graph.add(graph.scale(graph.matmul(x, weight, transposeB: true), scale), bias)
        }

        /// `x · Wᵀ + b` of the Linear `name`, labelled with its name.
        mutating func baseLinear(_ x: Tensor, _ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Tensor {
            let y = try scaledLinear(x, weight: weight("\(name).weight", [outFeatures, inFeatures]),
                                     scale: weights.weightScale("\(name).weight"), bias: weight("\(name).bias", [outFeatures]))
            graph.label(y, name)
            return y
        }

        /// `x · Wᵀ + b` with the low-rank branches of `name` beside it.
        mutating func hotLinear(_ x: Tensor, _ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Tensor {
            var y = try baseLinear(x, name, inFeatures, outFeatures)
            for branch in adapters.lowRank[name] ?? [] {
                let down = graph.parameter("\(branch.label).\(name).down", branch.down, in: branch.weightSet)
                let up = graph.parameter("\(branch.label).\(name).up", branch.up, in: branch.weightSet)
                y = try graph.lowRankUpdate(y, input: x, down: down, up: up, scale: branch.scale)
                graph.label(y, "\(name) + \(branch.label)")
            }
            return y
        }

        /// Linear → SiLU → Linear (diffusers TimestepEmbedding / PixArtAlphaTextProjection).
        mutating func mlpEmbedding(_ x: Tensor, _ name: String, _ inFeatures: Int) throws -> Tensor {
            let hidden = try graph.silu(linear(x, "\(name).linear_1", inFeatures, config.innerDim))
            return try linear(hidden, "\(name).linear_2", config.innerDim, config.innerDim)
        }

        /// Slice `index` of `count` equal chunks of a modulation vector [B, count·D], as [B, 1, D].
        mutating func chunk(_ x: Tensor, _ index: Int, of count: Int) throws -> Tensor {
            let width = x.shape[1] / count
            let part = try graph.slice(x, axis: 1, start: index * width, end: (index + 1) * width)
            return try graph.reshape(part, [x.shape[0], 1, width])
        }

        /// LayerNorm without affine (eps 1e-6), then x·(1 + scale) + shift.
        mutating func modulate(_ x: Tensor, shift: Tensor, scale: Tensor) throws -> Tensor {
            let normalized = try graph.layerNorm(x, epsilon: 1e-6)
            let scaled = try graph.add(normalized, graph.mul(normalized, scale))
            return try graph.add(scaled, shift)
        }

        /// q, k, v of one stream as [B, S, H, Dh], q and k RMS-normalised (eps 1e-6).
        mutating func projections(_ x: Tensor, q: String, k: String, v: String, normQ: String, normK: String)
            throws -> (Tensor, Tensor, Tensor) {
            let dim = config.innerDim
            let outputs = try linears(x, [q, k, v], dim, [dim, dim, dim])
            return try heads(outputs[0], outputs[1], outputs[2], normQ: normQ, normK: normK)
        }

        /// Projected q, k, v [B, S, D] split into heads, q and k RMS-normalised (eps 1e-6).
        mutating func heads(_ q: Tensor, _ k: Tensor, _ v: Tensor, normQ: String, normK: String) throws -> (Tensor, Tensor, Tensor) {
            let shape: Shape = [q.shape[0], q.shape[1], config.attentionHeadCount, config.attentionHeadDim]
            let query = try graph.rmsNorm(graph.reshape(q, shape), weight: weight("\(normQ).weight", [config.attentionHeadDim]), epsilon: 1e-6)
            let key = try graph.rmsNorm(graph.reshape(k, shape), weight: weight("\(normK).weight", [config.attentionHeadDim]), epsilon: 1e-6)
            return (query, key, try graph.reshape(v, shape))
        }

        /// Rotary embedding on q and k, attention over the joint sequence, heads merged: [B, S, D].
        mutating func attend(_ q: Tensor, _ k: Tensor, _ v: Tensor, cos: Tensor, sin: Tensor) throws -> Tensor {
            let rotatedQ = try graph.rotaryEmbedding(q, cos: cos, sin: sin)
            let rotatedK = try graph.rotaryEmbedding(k, cos: cos, sin: sin)
            let attended = try graph.attention(query: rotatedQ, key: rotatedK, value: v)
            return try graph.reshape(attended, [q.shape[0], q.shape[1], config.innerDim])
        }

        /// GELU-tanh MLP: `name.net.0.proj` → GELU → `name.net.2`.
        mutating func feedForward(_ x: Tensor, _ name: String) throws -> Tensor {
            let hidden = try graph.gelu(linear(x, "\(name).net.0.proj", config.innerDim, config.mlpHiddenDim), approximateTanh: true)
            return try linear(hidden, "\(name).net.2", config.mlpHiddenDim, config.innerDim)
        }

        mutating func forward(batch: Int, textLength: Int, imageLength: Int) throws -> Tensor {
            let dim = config.innerDim
            let joint = textLength + imageLength
            let hiddenInput = graph.input("hidden_states", [batch, imageLength, config.inChannels])
            let encoderInput = graph.input("encoder_hidden_states", [batch, textLength, config.jointAttentionDim])
            let pooled = graph.input("pooled_projections", [batch, config.pooledProjectionDim])
            let timestep = graph.input("timestep_projection", [batch, FluxConfig.timestepChannels])
            let cos = graph.input("rope_cos", [joint, config.attentionHeadDim / 2])
            let sin = graph.input("rope_sin", [joint, config.attentionHeadDim / 2])

            // Conditioning vector: timestep (+ guidance) + pooled text.
            var conditioning = try mlpEmbedding(timestep, "time_text_embed.timestep_embedder", FluxConfig.timestepChannels)
            if config.guidanceEmbeds {
                let guidance = graph.input("guidance_projection", [batch, FluxConfig.timestepChannels])
                conditioning = try graph.add(conditioning, mlpEmbedding(guidance, "time_text_embed.guidance_embedder", FluxConfig.timestepChannels))
            }
            conditioning = try graph.add(conditioning, mlpEmbedding(pooled, "time_text_embed.text_embedder", config.pooledProjectionDim))
            let activated = try graph.silu(conditioning)  // every AdaLN reads SiLU(temb)

            var image = try linear(hiddenInput, "x_embedder", config.inChannels, dim)
            var text = try linear(encoderInput, "context_embedder", config.jointAttentionDim, dim)

            for index in 0..<config.layerCount {
                let prefix = "transformer_blocks.\(index)"
                let imageMod = try linear(activated, "\(prefix).norm1.linear", dim, 6 * dim)
                let textMod = try linear(activated, "\(prefix).norm1_context.linear", dim, 6 * dim)
                // AdaLayerNormZero chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
                let imageNormed = try modulate(image, shift: chunk(imageMod, 0, of: 6), scale: chunk(imageMod, 1, of: 6))
                let textNormed = try modulate(text, shift: chunk(textMod, 0, of: 6), scale: chunk(textMod, 1, of: 6))
                let (iq, ik, iv) = try projections(imageNormed, q: "\(prefix).attn.to_q", k: "\(prefix).attn.to_k", v: "\(prefix).attn.to_v",
                                                   normQ: "\(prefix).attn.norm_q", normK: "\(prefix).attn.norm_k")
                let (tq, tk, tv) = try projections(textNormed, q: "\(prefix).attn.add_q_proj", k: "\(prefix).attn.add_k_proj",
                                                   v: "\(prefix).attn.add_v_proj", normQ: "\(prefix).attn.norm_added_q",
                                                   normK: "\(prefix).attn.norm_added_k")
                // Joint attention over [text, image].
                let attended = try attend(graph.concat([tq, iq], axis: 1), graph.concat([tk, ik], axis: 1),
                                          graph.concat([tv, iv], axis: 1), cos: cos, sin: sin)
                let textAttention = try linear(graph.slice(attended, axis: 1, start: 0, end: textLength), "\(prefix).attn.to_add_out", dim, dim)
                let imageAttention = try linear(graph.slice(attended, axis: 1, start: textLength, end: joint), "\(prefix).attn.to_out.0", dim, dim)

                image = try graph.add(image, graph.mul(chunk(imageMod, 2, of: 6), imageAttention))
                let imageMLP = try feedForward(modulate(image, shift: chunk(imageMod, 3, of: 6), scale: chunk(imageMod, 4, of: 6)), "\(prefix).ff")
                image = try graph.add(image, graph.mul(chunk(imageMod, 5, of: 6), imageMLP))

                text = try graph.add(text, graph.mul(chunk(textMod, 2, of: 6), textAttention))
                let textMLP = try feedForward(modulate(text, shift: chunk(textMod, 3, of: 6), scale: chunk(textMod, 4, of: 6)), "\(prefix).ff_context")
                text = try graph.add(text, graph.mul(chunk(textMod, 5, of: 6), textMLP))
            }

            var hidden = try graph.concat([text, image], axis: 1)
            for index in 0..<config.singleLayerCount {
                let prefix = "single_transformer_blocks.\(index)"
                // AdaLayerNormZeroSingle chunks: shift, scale, gate.
                let modulation = try linear(activated, "\(prefix).norm.linear", dim, 3 * dim)
                let normed = try modulate(hidden, shift: chunk(modulation, 0, of: 3), scale: chunk(modulation, 1, of: 3))
                // q, k, v and the MLP input: one fused Linear in BFL's and DiffSynth's layout.
                let projected4 = try linears(normed, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"].map { "\(prefix).\($0)" }, dim,
                                             [dim, dim, dim, config.mlpHiddenDim])
                let mlp = try graph.gelu(projected4[3], approximateTanh: true)
                let (q, k, v) = try heads(projected4[0], projected4[1], projected4[2], normQ: "\(prefix).attn.norm_q",
                                          normK: "\(prefix).attn.norm_k")
                let attended = try attend(q, k, v, cos: cos, sin: sin)
                let projected = try linear(graph.concat([attended, mlp], axis: 2), "\(prefix).proj_out", dim + config.mlpHiddenDim, dim)
                hidden = try graph.add(hidden, graph.mul(chunk(modulation, 2, of: 3), projected))
            }

            image = try graph.slice(hidden, axis: 1, start: textLength, end: joint)
            // AdaLayerNormContinuous chunks: scale first, then shift (BFL stores shift first).
            let final = try linear(activated, "norm_out.linear", dim, 2 * dim)
            let (shiftIndex, scaleIndex) = weights.finalModulationShiftFirst ? (0, 1) : (1, 0)
            let normed = try modulate(image, shift: chunk(final, shiftIndex, of: 2), scale: chunk(final, scaleIndex, of: 2))
            let sample = try linear(normed, "proj_out", dim, config.patchSize * config.patchSize * config.outChannels)
            graph.label(sample, "sample")
            return sample
        }
    }
}
