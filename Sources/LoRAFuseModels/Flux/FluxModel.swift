import Foundation
import LoRAFuse

/// A FLUX transformer checkpoint: its config and its (memory-mapped) weights under
/// diffusers names.
public struct FluxModel: Sendable {
    public let config: FluxConfig
    public let weights: any FluxWeights
    /// The weights its graphs bind, as one unit a backend makes resident (see `WeightSet`).
    public let weightSet: WeightSet

    /// A model of `config` whose tensors come from `weights`.
    public init(config: FluxConfig, weights: any FluxWeights) {
        self.config = config
        self.weights = weights
        self.weightSet = WeightSet(name: "transformer")
    }

    /// Loads a single BFL checkpoint file (ComfyUI's `model.diffusion_model.` prefix included,
    /// also inside an all-in-one checkpoint), or a diffusers folder: a pipeline folder with
    /// `transformer/`, or the transformer folder itself (`config.json` and
    /// `diffusion_pytorch_model*.safetensors`, sharded through
    /// `diffusion_pytorch_model.safetensors.index.json` or not).
    ///
    /// `config`: for a single file, a diffusers `transformer/config.json` (or a folder holding
    /// one) to take the values shapes cannot show (the RoPE axes), as diffusers'
    /// `from_single_file(config=…)` does; every value the weights do show must agree with it.
    public static func load(path: String, config configPath: String? = nil) throws -> FluxModel {
        var folder = URL(fileURLWithPath: path)
        let manager = FileManager.default
        var isFolder: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw ModelError.notAModel(path: path, reason: "no such file or folder")
        }
        if !isFolder.boolValue {
            // A single Black Forest Labs checkpoint.
            let given = try configPath.map { try FluxConfig.load(path: $0) }
            let (config, weights) = GGUFFile.hasMagic(path)
                ? try BFLFluxWeights.load(gguf: GGUFFile(path: path), config: given)
                : try BFLFluxWeights.load(file: SafeTensorsFile(path: path), config: given)
            return FluxModel(config: config, weights: weights)
        }
        if let configPath {
            throw ModelError.notAModel(path: configPath, reason:
                "a config is only taken for a single-file checkpoint; the folder \(path) has its own config.json")
        }
        if manager.fileExists(atPath: folder.appendingPathComponent("transformer/config.json").path) {
            folder = folder.appendingPathComponent("transformer")
        }
        let configFile = folder.appendingPathComponent("config.json").path
        guard manager.fileExists(atPath: configFile) else {
            throw ModelError.notAModel(path: path, reason: "no transformer/config.json or config.json")
        }
        let (config, _) = try FluxConfig.load(path: configFile)
        let files = try CheckpointFiles.load(folder: folder, stem: "diffusion_pytorch_model")
        let source = try TensorSource(files: files, description: folder.path)
        try observed(source).check(config, configFile: configFile, weights: folder.path)
        return FluxModel(config: config, weights: source)
    }

    /// What a diffusers checkpoint's shapes and block names show about its config.
    static func observed(_ source: TensorSource) throws -> FluxConfig.Observed {
        func shape(_ name: String) throws -> Shape {
            let shape = try source.tensor(name).shape
            guard shape.rank == 2 || name.hasSuffix("norm_q.weight") else {
                throw ModelError.shapeMismatch(name: name, expected: [0, 0], actual: shape, source: source.description)
            }
            return shape
        }
        var config = FluxConfig()
        let imageIn = try shape("x_embedder.weight")
        config.inChannels = imageIn[1]
        config.jointAttentionDim = try shape("context_embedder.weight")[1]
        config.pooledProjectionDim = try shape("time_text_embed.text_embedder.linear_1.weight")[1]
        config.guidanceEmbeds = source.contains("time_text_embed.guidance_embedder.linear_1.weight")
        config.layerCount = source.childCount("transformer_blocks")
        config.singleLayerCount = source.childCount("single_transformer_blocks")
        let norm = config.layerCount > 0 ? "transformer_blocks.0.attn.norm_q.weight" : "single_transformer_blocks.0.attn.norm_q.weight"
        config.attentionHeadDim = source.contains(norm) ? try shape(norm)[0] : 0
        config.attentionHeadCount = config.attentionHeadDim > 0 ? imageIn[0] / config.attentionHeadDim : 0
        return FluxConfig.Observed(config: config, evidence: [
            "in_channels": "x_embedder.weight has \(config.inChannels) inputs",
            "num_layers": "the weights have \(config.layerCount) transformer_blocks",
            "num_single_layers": "the weights have \(config.singleLayerCount) single_transformer_blocks",
            "attention_head_dim": "\(norm) is \(config.attentionHeadDim) wide",
            "num_attention_heads": "x_embedder.weight is \(imageIn[0]) wide",
            "joint_attention_dim": "context_embedder.weight has \(config.jointAttentionDim) inputs",
            "pooled_projection_dim": "time_text_embed.text_embedder.linear_1.weight has \(config.pooledProjectionDim) inputs",
            "guidance_embeds": config.guidanceEmbeds ? "the weights have time_text_embed.guidance_embedder" : "the weights have no guidance embedder",
        ])
    }
}

extension FluxConfig {
    /// A diffusers `FluxTransformer2DModel` config: the file, or a folder holding `config.json`
    /// or `transformer/config.json`. Returns the config and the file it was read from.
    public static func load(path: String) throws -> (config: FluxConfig, file: String) {
        var url = URL(fileURLWithPath: path)
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw ModelError.notAModel(path: path, reason: "no such config file or folder")
        }
        if isFolder.boolValue {
            let nested = url.appendingPathComponent("transformer/config.json")
            url = FileManager.default.fileExists(atPath: nested.path) ? nested : url.appendingPathComponent("config.json")
        }
        let data = try InputFile.read(url.path) { ModelError.notAModel(path: url.path, reason: "cannot read the config: \($0)") }
        let json: JSONValue
        do { json = try StrictJSONParser.parse([UInt8](data)) } catch {
            throw ModelError.notAModel(path: url.path, reason: "the config is not valid JSON: \(error)")
        }
        if let className = json[member: "_class_name"], className != .string("FluxTransformer2DModel") {
            throw ModelError.notAModel(path: url.path, reason: "_class_name is \(className.literal ?? className.kindName), expected \"FluxTransformer2DModel\"")
        }
        let config = try FluxConfig(json: json, source: url.path)
        try config.validate(source: url.path)
        return (config, url.path)
    }
}
