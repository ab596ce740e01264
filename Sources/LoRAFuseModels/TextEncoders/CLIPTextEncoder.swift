import Foundation
import LoRAFuse

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
    /// Its weights as graphs bind them, one unit a backend makes resident.
    public let weightSet = WeightSet(name: "CLIP text encoder")
    public var description: String { weights.source.description }

    /// A transformers folder (`config.json`, `model*.safetensors`), a diffusers pipeline
    /// folder (its `text_encoder/`), or one safetensors file with CLIPTextModel's names
    /// (ComfyUI's `clip_l.safetensors`; config from shapes, heads of 64).
    public static func load(path: String) throws -> CLIPTextEncoder {
        let checkpoint = try ComponentCheckpoint.open(
            path, subfolder: "text_encoder", probe: "embeddings.token_embedding.weight",
            prefixes: ["", "text_model.", "cond_stage_model.transformer.text_model.", "text_encoders.clip_l.transformer.text_model.",
                       "cond_stage_model.transformer.", "text_encoders.clip_l.transformer."],
            classNames: ["CLIPTextModel", "CLIPTextModelWithProjection"], kind: "CLIP text encoder")
        switch checkpoint {
        case let .folder(source, object, configPath, prefix):
            let weights = TextEncoderWeights(source: source, prefix: prefix)
            return CLIPTextEncoder(config: try CLIPTextConfig(json: object, path: configPath), weights: weights)
        case let .file(source, prefix, _):
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
        let weights = self.weights
        let weight: CLIPLayerBuilder.Weight = { graph, name, shape in
            let value = try weights.tensor(name, shape: shape)
            // Matrices are views of the checkpoint (the model's weight set); vectors are
            // widened copies, constants of this graph.
            return shape.rank == 1 ? graph.parameter(name, value.converted(to: .float32)) : graph.parameter(name, value, in: weightSet)
        }
        let ids = graph.input("input_ids", [batch, length], .int64)
        let tokens = try graph.embedding(table: weight(&graph, "embeddings.token_embedding.weight", [c.vocabSize, d]), ids: ids)
        let positionIds = graph.parameter("position_ids", HostTensor(shape: [length], dtype: .int32, values: (0..<length).map(Double.init)))
        let positions = try graph.embedding(table: weight(&graph, "embeddings.position_embedding.weight", [c.maxPositions, d]), ids: positionIds)
        var hidden = try graph.add(tokens, positions)
        let builder = CLIPLayerBuilder(width: d, heads: c.headCount, headDim: c.headDim, intermediate: c.intermediateSize,
                                       activation: c.activation, epsilon: c.layerNormEpsilon, names: .transformers, weight: weight)
        for index in 0..<c.layerCount {
            hidden = try builder.layer(&graph, hidden, prefix: "encoder.layers.\(index)")
        }
        func layerNorm(_ x: Tensor, _ name: String) throws -> Tensor { try builder.layerNorm(&graph, x, name) }
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

/// One pre-LN CLIP encoder layer (causal self-attention, then an MLP, residuals), for any
/// parameter naming: transformers' `CLIPTextModel` or DiffSynth's `CLIPEncoderLayer`
/// (whose attention is `heads × headDim` wide whatever the layer's width).
package struct CLIPLayerBuilder {
    package typealias Weight = (inout Graph, String, Shape) throws -> Tensor
    package struct Names {
        var q, k, v, out, norm1, norm2, fc1, fc2: String
        static let transformers = Names(q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj", out: "self_attn.out_proj",
                                        norm1: "layer_norm1", norm2: "layer_norm2", fc1: "mlp.fc1", fc2: "mlp.fc2")
        package static let diffSynth = Names(q: "attn.to_q", k: "attn.to_k", v: "attn.to_v", out: "attn.to_out",
                                     norm1: "layer_norm1", norm2: "layer_norm2", fc1: "fc1", fc2: "fc2")
    }
    let width: Int, heads: Int, headDim: Int, intermediate: Int
    let activation: String
    let epsilon: Float
    let names: Names
    let weight: Weight

    package init(width: Int, heads: Int, headDim: Int, intermediate: Int, activation: String, epsilon: Float, names: Names, weight: @escaping Weight) {
        self.width = width
        self.heads = heads
        self.headDim = headDim
        self.intermediate = intermediate
        self.activation = activation
        self.epsilon = epsilon
        self.names = names
        self.weight = weight
    }

    func linear(_ graph: inout Graph, _ x: Tensor, _ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Tensor {
        try graph.linear(x, weight: weight(&graph, "\(name).weight", [outFeatures, inFeatures]),
                         bias: weight(&graph, "\(name).bias", [outFeatures]))
    }

    package func layerNorm(_ graph: inout Graph, _ x: Tensor, _ name: String) throws -> Tensor {
        try graph.layerNorm(x, weight: weight(&graph, "\(name).weight", [width]), bias: weight(&graph, "\(name).bias", [width]),
                            epsilon: epsilon)
    }

    /// `hidden` [B, L, width] through the layer `prefix`.
    package func layer(_ graph: inout Graph, _ hidden: Tensor, prefix: String) throws -> Tensor {
        let (batch, length) = (hidden.shape[0], hidden.shape[1])
        let inner = heads * headDim
        let shape: Shape = [batch, length, heads, headDim]
        let normed = try layerNorm(&graph, hidden, "\(prefix).\(names.norm1)")
        let q = try graph.reshape(linear(&graph, normed, "\(prefix).\(names.q)", width, inner), shape)
        let k = try graph.reshape(linear(&graph, normed, "\(prefix).\(names.k)", width, inner), shape)
        let v = try graph.reshape(linear(&graph, normed, "\(prefix).\(names.v)", width, inner), shape)
        let attended = try graph.reshape(graph.attention(query: q, key: k, value: v, causal: true), [batch, length, inner])
        var result = try graph.add(hidden, linear(&graph, attended, "\(prefix).\(names.out)", inner, width))
        let expanded = try linear(&graph, layerNorm(&graph, result, "\(prefix).\(names.norm2)"), "\(prefix).\(names.fc1)", width, intermediate)
        let activated: Tensor
        switch activation {
        case "quick_gelu": activated = try graph.unary(.quickGelu, expanded)
        case "gelu": activated = try graph.gelu(expanded)
        default: activated = try graph.gelu(expanded, approximateTanh: true)
        }
        result = try graph.add(result, linear(&graph, activated, "\(prefix).\(names.fc2)", intermediate, width))
        graph.label(result, prefix)
        return result
    }
}
