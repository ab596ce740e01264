import Foundation
import LoRAFuse

/// transformers' `T5Config` fields the encoder uses.
public struct T5EncoderConfig: Sendable, Equatable {
    public var vocabSize = 32128
    public var modelDim = 4096
    public var keyValueDim = 64
    public var headCount = 64
    public var feedForwardDim = 10240
    public var layerCount = 24
    public var bucketCount = 32
    public var maxDistance = 128
    /// `gated-gelu` (T5 v1.1, FLUX's T5-XXL: GELU-tanh gate), `gated-relu`, `gated-silu`, `relu`, `gelu`.
    public var feedForward = "gated-gelu"
    public var epsilon: Float = 1e-6

    public init() {}

    public var innerDim: Int { headCount * keyValueDim }
    public var isGated: Bool { feedForward.hasPrefix("gated-") }
    var activation: String { isGated ? String(feedForward.dropFirst(6)) : feedForward }

    init(json object: [String: Any], path: String) throws {
        vocabSize = try configValue(object, "vocab_size", 32128, path: path)
        modelDim = try configValue(object, "d_model", 512, path: path)
        keyValueDim = try configValue(object, "d_kv", 64, path: path)
        headCount = try configValue(object, "num_heads", 8, path: path)
        feedForwardDim = try configValue(object, "d_ff", 2048, path: path)
        layerCount = try configValue(object, "num_layers", 6, path: path)
        bucketCount = try configValue(object, "relative_attention_num_buckets", 32, path: path)
        maxDistance = try configValue(object, "relative_attention_max_distance", 128, path: path)
        feedForward = try configValue(object, "feed_forward_proj", "relu", path: path)
        epsilon = Float(try configValue(object, "layer_norm_epsilon", 1e-6 as Double, path: path))
        try validate(path: path)
    }

    func validate(path: String) throws {
        guard vocabSize > 0, modelDim > 0, keyValueDim > 0, headCount > 0, feedForwardDim > 0, layerCount > 0,
              bucketCount >= 4, maxDistance > 0 else {
            throw ModelError.notAModel(path: path, reason: "T5 config: a size is not positive (or fewer than 4 buckets)")
        }
        guard ["gelu", "gelu_new", "relu", "silu"].contains(activation) else {
            throw ModelError.notAModel(path: path, reason: "T5 config: feed_forward_proj '\(feedForward)' is not supported")
        }
    }

    /// T5's bidirectional relative-position bucket of `key − query`, computed as transformers
    /// does (the logarithmic part in float32, truncated).
    public func bucket(_ relative: Int) -> Int {
        let half = bucketCount / 2
        var bucket = relative > 0 ? half : 0
        let distance = abs(relative)
        let exact = half / 2
        if distance < exact { return bucket + distance }
        let scaled = Foundation.log(Float(distance) / Float(exact)) / Float(Foundation.log(Double(maxDistance) / Double(exact)))
            * Float(half - exact)
        bucket += min(exact + Int(scaled), half - 1)
        return bucket
    }
}

/// transformers' `T5EncoderModel` (FLUX's T5-XXL) as a graph: token embeddings, pre-RMSNorm
/// layers with unscaled self-attention plus the relative-position bias of the first layer
/// (shared by all), a gated-GELU feed-forward, a final RMSNorm. Output `last_hidden_state`.
public struct T5Encoder: Sendable {
    public let config: T5EncoderConfig
    let weights: TextEncoderWeights
    /// Its weights as graphs bind them, one unit a backend makes resident.
    public let weightSet = WeightSet(name: "T5 encoder")
    public var description: String { weights.source.description }

    /// A transformers folder (`config.json`, `model*.safetensors`), a diffusers pipeline
    /// folder (its `text_encoder_2/`), or one safetensors file with T5EncoderModel's names
    /// (ComfyUI's `t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`; config from
    /// shapes: heads from the relative-attention table, gated-GELU, max distance 128).
    public static func load(path: String) throws -> T5Encoder {
        if GGUFFile.hasMagic(path) {
            // llama.cpp's T5 names (city96's T5-XXL encoder GGUFs), block-quantized or not.
            let file = try GGUFFile(path: path)
            let gated = file.tensors.contains { $0.name.hasSuffix(".ffn_gate.weight") }
            let source = try TensorSource(gguf: file) { transformersName($0, gated: gated) }
            guard source.contains("encoder.block.0.layer.0.SelfAttention.q.weight") else {
                throw ModelError.notAModel(path: path, reason: "a GGUF file without llama.cpp's T5 encoder tensors (enc.blk.0.attn_q.weight)")
            }
            return try fromShapes(TextEncoderWeights(source: source, prefix: ""), path: path)
        }
        let checkpoint = try ComponentCheckpoint.open(
            path, subfolder: "text_encoder_2", probe: "encoder.block.0.layer.0.SelfAttention.q.weight",
            prefixes: ["", "text_encoders.t5xxl.transformer.", "cond_stage_model.transformer."],
            classNames: ["T5EncoderModel", "T5ForConditionalGeneration", "T5Model"], kind: "T5 encoder")
        switch checkpoint {
        case let .folder(source, object, configPath, prefix):
            let weights = TextEncoderWeights(source: source, prefix: prefix)
            return T5Encoder(config: try T5EncoderConfig(json: object, path: configPath), weights: weights)
        case let .file(source, prefix, _):
            return try fromShapes(TextEncoderWeights(source: source, prefix: prefix), path: path)
        }
    }

    /// The config from the tensors' shapes (single files carry none): heads from the
    /// relative-attention table, gated-GELU when `wi_0` exists, max distance 128.
    static func fromShapes(_ weights: TextEncoderWeights, path: String) throws -> T5Encoder {
        var config = T5EncoderConfig()
        let embedding = try weights.shape(embeddingName(weights))
        config.vocabSize = embedding[0]
        config.modelDim = embedding[1]
        let table = try weights.shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        config.bucketCount = table[0]
        config.headCount = table[1]
        let inner = try weights.shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
        config.keyValueDim = inner / max(1, config.headCount)
        let gated = weights.contains("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
        config.feedForward = gated ? "gated-gelu" : "relu"
        config.feedForwardDim = try weights.shape("encoder.block.0.layer.1.DenseReluDense.\(gated ? "wi_0" : "wi").weight")[0]
        config.layerCount = weights.count("encoder.block")
        try config.validate(path: path)
        return T5Encoder(config: config, weights: weights)
    }

    /// transformers' T5EncoderModel name of a llama.cpp T5 tensor (`enc.blk.3.ffn_gate.weight`
    /// → `encoder.block.3.layer.1.DenseReluDense.wi_0.weight`); nil for other names. `ffn_up`
    /// is `wi_1` beside a gate (T5 v1.1, FLUX's T5-XXL), else the one `wi` (T5 v1.0).
    static func transformersName(_ gguf: String, gated: Bool) -> String? {
        if gguf == "token_embd.weight" { return "shared.weight" }
        if gguf == "enc.output_norm.weight" { return "encoder.final_layer_norm.weight" }
        let parts = gguf.split(separator: ".")
        guard parts.count == 5, parts[0] == "enc", parts[1] == "blk", let block = Int(parts[2]), parts[4] == "weight" else { return nil }
        let layer = "encoder.block.\(block).layer"
        switch parts[3] {
        case "attn_q": return "\(layer).0.SelfAttention.q.weight"
        case "attn_k": return "\(layer).0.SelfAttention.k.weight"
        case "attn_v": return "\(layer).0.SelfAttention.v.weight"
        case "attn_o": return "\(layer).0.SelfAttention.o.weight"
        case "attn_rel_b": return "\(layer).0.SelfAttention.relative_attention_bias.weight"
        case "attn_norm": return "\(layer).0.layer_norm.weight"
        case "ffn_norm": return "\(layer).1.layer_norm.weight"
        case "ffn_gate": return "\(layer).1.DenseReluDense.wi_0.weight"
        case "ffn_up": return "\(layer).1.DenseReluDense.\(gated ? "wi_1" : "wi").weight"
        case "ffn_down": return "\(layer).1.DenseReluDense.wo.weight"
        default: return nil
        }
    }

    init(config: T5EncoderConfig, weights: TextEncoderWeights) {
        self.config = config
        self.weights = weights
    }

    static func embeddingName(_ weights: TextEncoderWeights) -> String {
        weights.contains("shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight"
    }

    /// Inputs of `graph(batch:length:)` for these ids ([B][L]).
    public func inputs(_ ids: [[Int]]) throws -> [String: HostTensor] {
        ["input_ids": try ComponentCheckpoint.ids(ids)]
    }

    /// The relative-position bias [1, H, L, L] of the first layer's table, which every layer adds.
    func positionBias(length: Int) throws -> HostTensor {
        let heads = config.headCount
        let table = try weights.tensor("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                       shape: [config.bucketCount, heads]).floats()
        let buckets = (-(length - 1)...(length - 1)).map { config.bucket($0) }
        var bias = [Float](repeating: 0, count: heads * length * length)
        for head in 0..<heads {
            for query in 0..<length {
                let row = (head * length + query) * length
                for key in 0..<length { bias[row + key] = table[buckets[key - query + length - 1] * heads + head] }
            }
        }
        return HostTensor(shape: [1, heads, length, length], floats: bias)
    }

    /// The forward pass for `batch` rows of `length` ids: output `last_hidden_state` [B, L, D].
    public func graph(batch: Int, length: Int) throws -> Graph {
        var graph = Graph()
        let c = config, d = c.modelDim, inner = c.innerDim
        func weight(_ name: String, _ shape: Shape) throws -> Tensor {
            let value = try weights.tensor(name, shape: shape)
            // Matrices are views of the checkpoint (the model's weight set); vectors are
            // widened copies, constants of this graph.
            return shape.rank == 1 ? graph.parameter(name, value.converted(to: .float32)) : graph.parameter(name, value, in: weightSet)
        }
        func linear(_ x: Tensor, _ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Tensor {
            try graph.linear(x, weight: weight("\(name).weight", [outFeatures, inFeatures]))
        }
        func norm(_ x: Tensor, _ name: String) throws -> Tensor {
            try graph.rmsNorm(x, weight: weight("\(name).weight", [d]), epsilon: c.epsilon)
        }
        func activate(_ x: Tensor) throws -> Tensor {
            // transformers turns "gated-gelu" into GELU-tanh (`gelu_new`); a plain "gelu" is exact.
            switch c.activation {
            case "gelu_new": try graph.gelu(x, approximateTanh: true)
            case "gelu": try c.isGated ? graph.gelu(x, approximateTanh: true) : graph.gelu(x)
            case "silu": try graph.silu(x)
            default: try graph.unary(.relu, x)
            }
        }
        let ids = graph.input("input_ids", [batch, length], .int64)
        var hidden = try graph.embedding(table: weight(Self.embeddingName(weights), [c.vocabSize, d]), ids: ids)
        let bias = graph.parameter("relative_position_bias", try positionBias(length: length))
        let heads: Shape = [batch, length, c.headCount, c.keyValueDim]
        for index in 0..<c.layerCount {
            let prefix = "encoder.block.\(index).layer"
            let normed = try norm(hidden, "\(prefix).0.layer_norm")
            let q = try graph.reshape(linear(normed, "\(prefix).0.SelfAttention.q", d, inner), heads)
            let k = try graph.reshape(linear(normed, "\(prefix).0.SelfAttention.k", d, inner), heads)
            let v = try graph.reshape(linear(normed, "\(prefix).0.SelfAttention.v", d, inner), heads)
            let attended = try graph.attention(query: q, key: k, value: v, mask: bias, scale: 1)
            hidden = try graph.add(hidden, linear(graph.reshape(attended, [batch, length, inner]), "\(prefix).0.SelfAttention.o", inner, d))
            let ffInput = try norm(hidden, "\(prefix).1.layer_norm")
            let ffName = "\(prefix).1.DenseReluDense"
            let expanded: Tensor
            if c.isGated {
                expanded = try graph.mul(activate(linear(ffInput, "\(ffName).wi_0", d, c.feedForwardDim)),
                                         linear(ffInput, "\(ffName).wi_1", d, c.feedForwardDim))
            } else {
                expanded = try activate(linear(ffInput, "\(ffName).wi", d, c.feedForwardDim))
            }
            hidden = try graph.add(hidden, linear(expanded, "\(ffName).wo", c.feedForwardDim, d))
            graph.label(hidden, "encoder.block.\(index)")
        }
        let final = try norm(hidden, "encoder.final_layer_norm")
        graph.label(final, "last_hidden_state")
        graph.markOutput(final)
        return graph
    }
}
