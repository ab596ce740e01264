import Foundation

/// A FLUX transformer checkpoint: its config and its (memory-mapped) weights under
/// diffusers names.
public struct FluxModel: Sendable {
    public let config: FluxConfig
    public let weights: any FluxWeights

    public init(config: FluxConfig, weights: any FluxWeights) {
        self.config = config
        self.weights = weights
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
            let (config, weights) = try BFLFluxWeights.load(file: SafeTensorsFile(path: path), config: given)
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
        return FluxModel(config: config, weights: TensorSource(files: files, description: folder.path))
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
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError.notAModel(path: url.path, reason: "cannot read the config")
        }
        let config: FluxConfig
        do {
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ModelError.notAModel(path: url.path, reason: "the config is not a JSON object")
            }
            if let className = object["_class_name"] as? String, className != "FluxTransformer2DModel" {
                throw ModelError.notAModel(path: url.path, reason: "_class_name is \(className)")
            }
            config = try JSONDecoder().decode(FluxConfig.self, from: data)
        } catch let error as ModelError {
            throw error
        } catch {
            throw ModelError.notAModel(path: url.path, reason: "cannot read the config: \(error)")
        }
        try config.validate(source: url.path)
        return (config, url.path)
    }
}
