import Foundation

/// transformers' `CLIPTextConfig` fields the text model uses.
public struct CLIPTextConfig: Sendable, Equatable {
    public var vocabSize = 49408
    public var hiddenSize = 768
    public var intermediateSize = 3072
    public var layerCount = 12
    public var headCount = 12
    public var maxPositions = 77
    /// `quick_gelu` (OpenAI's CLIP, FLUX's CLIP-L) or `gelu`.
    public var activation = "quick_gelu"
    public var layerNormEpsilon: Float = 1e-5
    /// transformers' legacy default 2 means "pool at the largest id" (the end-of-text token
    /// is the last id of CLIP's vocabulary); any other value is looked up.
    public var eosTokenId = 2

    public init() {}

    public var headDim: Int { hiddenSize / headCount }

    init(json object: [String: Any], path: String) throws {
        vocabSize = try configValue(object, "vocab_size", 49408, path: path)
        hiddenSize = try configValue(object, "hidden_size", 512, path: path)
        intermediateSize = try configValue(object, "intermediate_size", 2048, path: path)
        layerCount = try configValue(object, "num_hidden_layers", 12, path: path)
        headCount = try configValue(object, "num_attention_heads", 8, path: path)
        maxPositions = try configValue(object, "max_position_embeddings", 77, path: path)
        activation = try configValue(object, "hidden_act", "quick_gelu", path: path)
        layerNormEpsilon = Float(try configValue(object, "layer_norm_eps", 1e-5 as Double, path: path))
        eosTokenId = try configValue(object, "eos_token_id", 2, path: path)
        try validate(path: path)
    }

    func validate(path: String) throws {
        guard vocabSize > 0, hiddenSize > 0, intermediateSize > 0, layerCount > 0, headCount > 0, maxPositions > 0,
              hiddenSize % headCount == 0 else {
            throw ModelError.notAModel(path: path, reason: "CLIP config: width \(hiddenSize) is not a multiple of \(headCount) heads, or a size is not positive")
        }
        guard ["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"].contains(activation) else {
            throw ModelError.notAModel(path: path, reason: "CLIP config: hidden_act '\(activation)' is not supported")
        }
    }
}

/// transformers' `CLIPTextModel` (FLUX's CLIP-L, AutoLoRA's query encoder) as a graph:
/// token + position embeddings, pre-LN layers with causal self-attention and a
/// quick-GELU MLP, a final LayerNorm; `pooler_output` is the final state at the
/// end-of-text token.
public struct CLIPTextEncoder: Sendable {
    public let config: CLIPTextConfig
    let weights: TextEncoderWeights
    public var description: String { weights.source.description }

    /// A transformers folder (`config.json`, `model*.safetensors`), a diffusers pipeline
    /// folder (its `text_encoder/`), or one safetensors file with CLIPTextModel's names
    /// (ComfyUI's `clip_l.safetensors`; config from shapes, heads of 64).
    public static func load(path: String) throws -> CLIPTextEncoder {
        let checkpoint = try ComponentCheckpoint.open(
            path, subfolder: "text_encoder", probe: "embeddings.token_embedding.weight",
            prefixes: ["", "text_model.", "cond_stage_model.transformer.text_model.", "text_encoders.clip_l.transformer.text_model."],
            classNames: ["CLIPTextModel", "CLIPTextModelWithProjection"], kind: "CLIP text encoder")
        switch checkpoint {
        case let .folder(source, object, configPath):
            let weights = TextEncoderWeights(source: source, prefix: "text_model.")
            return CLIPTextEncoder(config: try CLIPTextConfig(json: object, path: configPath), weights: weights)
        case let .file(source, prefix):
            let weights = TextEncoderWeights(source: source, prefix: prefix)
            var config = CLIPTextConfig()
            let tokens = try weights.shape("embeddings.token_embedding.weight")
            config.vocabSize = tokens[0]
            config.hiddenSize = tokens[1]
            config.maxPositions = try weights.shape("embeddings.position_embedding.weight")[0]
            config.intermediateSize = try weights.shape("encoder.layers.0.mlp.fc1.weight")[0]
            config.layerCount = weights.count("encoder.layers")
            config.headCount = max(1, config.hiddenSize / 64)
            config.eosTokenId = 2
            try config.validate(path: path)
            return CLIPTextEncoder(config: config, weights: weights)
        }
    }

    init(config: CLIPTextConfig, weights: TextEncoderWeights) {
        self.config = config
        self.weights = weights
    }

    /// Where the pooled output is read for each row of ids, as transformers decides.
    public func poolingPositions(_ ids: [[Int]]) -> [Int] {
        ids.map { row in
            if config.eosTokenId == 2 {
                return row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) } ?? 0
            }
            return row.firstIndex(of: config.eosTokenId) ?? 0
        }
    }

    /// Inputs of `graph(batch:length:)` for these ids ([B][L]).
    public func inputs(_ ids: [[Int]]) throws -> [String: HostTensor] {
        let tensor = try ComponentCheckpoint.ids(ids)
        let batch = tensor.shape[0], length = tensor.shape[1]
        guard length <= config.maxPositions else {
            throw ModelError.invalidInputs("\(length) tokens is more than this CLIP's \(config.maxPositions) positions")
        }
        let positions = poolingPositions(ids).enumerated().map { Double($0.offset * length + $0.element) }
        return [
            "input_ids": tensor,
            "pooled_rows": HostTensor(shape: [batch], dtype: .int32, values: positions),
        ]
    }

    /// The forward pass for `batch` rows of `length` ids: outputs `last_hidden_state`
    /// [B, L, D] and `pooler_output` [B, D].
    public func graph(batch: Int, length: Int) throws -> Graph {
        var graph = Graph()
        let c = config, d = c.hiddenSize
        func weight(_ name: String, _ shape: Shape) throws -> Tensor {
            let value = try weights.tensor(name, shape: shape)
            return graph.parameter(name, shape.rank == 1 ? value.converted(to: .float32) : value)
        }
        func linear(_ x: Tensor, _ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Tensor {
            try graph.linear(x, weight: weight("\(name).weight", [outFeatures, inFeatures]), bias: weight("\(name).bias", [outFeatures]))
        }
        func layerNorm(_ x: Tensor, _ name: String) throws -> Tensor {
            try graph.layerNorm(x, weight: weight("\(name).weight", [d]), bias: weight("\(name).bias", [d]), epsilon: c.layerNormEpsilon)
        }
        let ids = graph.input("input_ids", [batch, length], .int64)
        let tokens = try graph.embedding(table: weight("embeddings.token_embedding.weight", [c.vocabSize, d]), ids: ids)
        let positionIds = graph.parameter("position_ids", HostTensor(shape: [length], dtype: .int32, values: (0..<length).map(Double.init)))
        let positions = try graph.embedding(table: weight("embeddings.position_embedding.weight", [c.maxPositions, d]), ids: positionIds)
        var hidden = try graph.add(tokens, positions)
        let heads: Shape = [batch, length, c.headCount, c.headDim]
        for index in 0..<c.layerCount {
            let prefix = "encoder.layers.\(index)"
            let normed = try layerNorm(hidden, "\(prefix).layer_norm1")
            let q = try graph.reshape(linear(normed, "\(prefix).self_attn.q_proj", d, d), heads)
            let k = try graph.reshape(linear(normed, "\(prefix).self_attn.k_proj", d, d), heads)
            let v = try graph.reshape(linear(normed, "\(prefix).self_attn.v_proj", d, d), heads)
            let attended = try graph.reshape(graph.attention(query: q, key: k, value: v, causal: true), [batch, length, d])
            hidden = try graph.add(hidden, linear(attended, "\(prefix).self_attn.out_proj", d, d))
            let inner = try linear(layerNorm(hidden, "\(prefix).layer_norm2"), "\(prefix).mlp.fc1", d, c.intermediateSize)
            let activated: Tensor
            switch c.activation {
            case "quick_gelu": activated = try graph.unary(.quickGelu, inner)
            case "gelu": activated = try graph.gelu(inner)
            default: activated = try graph.gelu(inner, approximateTanh: true)
            }
            hidden = try graph.add(hidden, linear(activated, "\(prefix).mlp.fc2", c.intermediateSize, d))
            graph.label(hidden, "\(prefix)")
        }
        let final = try layerNorm(hidden, "final_layer_norm")
        graph.label(final, "last_hidden_state")
        let rows = graph.input("pooled_rows", [batch], .int32)
        let pooled = try graph.embedding(table: graph.reshape(final, [batch * length, d]), ids: rows)
        graph.label(pooled, "pooler_output")
        graph.markOutput(final)
        graph.markOutput(pooled)
        return graph
    }
}
