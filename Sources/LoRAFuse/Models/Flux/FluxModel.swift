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

    /// Loads a single BFL checkpoint file, or a diffusers folder: a pipeline folder with `transformer/`, or the transformer
    /// folder itself (`config.json` and `diffusion_pytorch_model*.safetensors`, sharded
    /// through `diffusion_pytorch_model.safetensors.index.json` or not).
    public static func load(path: String) throws -> FluxModel {
        var folder = URL(fileURLWithPath: path)
        let manager = FileManager.default
        var isFolder: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw ModelError.notAModel(path: path, reason: "no such file or folder")
        }
        if !isFolder.boolValue {
            // A single Black Forest Labs checkpoint.
            let (config, weights) = try BFLFluxWeights.load(file: SafeTensorsFile(path: path))
            return FluxModel(config: config, weights: weights)
        }
        if manager.fileExists(atPath: folder.appendingPathComponent("transformer/config.json").path) {
            folder = folder.appendingPathComponent("transformer")
        }
        let configURL = folder.appendingPathComponent("config.json")
        guard let data = manager.contents(atPath: configURL.path) else {
            throw ModelError.notAModel(path: path, reason: "no transformer/config.json or config.json")
        }
        let config: FluxConfig
        do {
            if let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
               let className = object["_class_name"] as? String, className != "FluxTransformer2DModel" {
                throw ModelError.notAModel(path: configURL.path, reason: "_class_name is \(className)")
            }
            config = try JSONDecoder().decode(FluxConfig.self, from: data)
        } catch let error as ModelError {
            throw error
        } catch {
            throw ModelError.notAModel(path: configURL.path, reason: "cannot read the config: \(error)")
        }
        try config.validate(source: configURL.path)

        let files = try CheckpointFiles.load(folder: folder, stem: "diffusion_pytorch_model")
        return FluxModel(config: config, weights: TensorSource(files: files, description: folder.path))
    }
}
