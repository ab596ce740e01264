import Foundation
import LoRAFuse

/// Safetensors checkpoints as transformers and diffusers save them: one file, or shards
/// listed by `<stem>.safetensors.index.json`.
public enum CheckpointFiles {
    /// The safetensors files of `stem` in `folder` (`model`, `diffusion_pytorch_model`).
    public static func load(folder: URL, stem: String) throws -> [SafeTensorsFile] {
        let index = folder.appendingPathComponent("\(stem).safetensors.index.json")
        var names: [String]
        if InputFile.exists(index.path) {
            let data = try InputFile.read(index.path) { ModelError.notAModel(path: index.path, reason: "cannot read the index: \($0)") }
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = object["weight_map"] as? [String: String] else {
                throw ModelError.notAModel(path: index.path, reason: "the index has no weight_map of tensor name → shard file name")
            }
            names = Array(Set(map.values)).sorted()
            // Shards are files of this folder: a name that climbs out of it (`../x`, `/etc/x`)
            // would load weights from anywhere on the machine.
            if let outside = names.first(where: { $0.isEmpty || $0.hasPrefix("/") || $0.split(separator: "/").contains("..") }) {
                throw ModelError.notAModel(path: index.path, reason: "shard '\(outside)' is not a file inside \(folder.path)")
            }
        } else {
            names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
                .filter { $0.hasPrefix(stem) && $0.hasSuffix(".safetensors") }.sorted()
        }
        guard !names.isEmpty else { throw ModelError.notAModel(path: folder.path, reason: "no \(stem)*.safetensors") }
        return try names.map { try SafeTensorsFile(path: folder.appendingPathComponent($0).path) }
    }

    /// A JSON config object, or a clear error naming the file.
    static func config(_ url: URL, expecting classNames: [String]) throws -> [String: Any] {
        let data = try InputFile.read(url.path) { ModelError.notAModel(path: url.path, reason: "cannot read the config: \($0)") }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ModelError.notAModel(path: url.path, reason: "the config is not a JSON object")
        }
        if let architectures = object["architectures"] as? [String], let first = architectures.first,
           !classNames.contains(first) {
            throw ModelError.notAModel(path: url.path, reason: "architectures is \(first), expected \(classNames.joined(separator: " or "))")
        }
        if let className = object["_class_name"] as? String, !classNames.contains(className) {
            throw ModelError.notAModel(path: url.path, reason: "_class_name is \(className), expected \(classNames.joined(separator: " or "))")
        }
        return object
    }
}

/// Weights of a text encoder, under transformers' names, from a folder or a single file.
struct TextEncoderWeights: Sendable {
    let source: TensorSource
    /// Prepended to transformers' names (ComfyUI files sometimes nest them).
    let prefix: String

    /// Matrices keep their stored type (F32, F16, BF16, F8) for the kernels; vectors and
    /// small tables are widened on the host.
    func tensor(_ name: String, shape: Shape) throws -> HostTensor {
        let value = try source.tensor(prefix + name)
        guard value.shape == shape else {
            throw ModelError.shapeMismatch(name: prefix + name, expected: shape, actual: value.shape, source: source.description)
        }
        guard value.dtype.isFloatingPoint, value.dtype != .float64 || shape.rank < 2 else {
            throw ModelError.unsupportedDType(name: prefix + name, dtype: value.dtype, source: source.description)
        }
        return value
    }

    func contains(_ name: String) -> Bool { source.contains(prefix + name) }

    func shape(_ name: String) throws -> Shape { try source.shape(prefix + name) }

    /// How many numbered children `<head>.N.` there are (`head` in the file's own names).
    func count(_ head: String) -> Int { source.childCount(prefix + head) }
}

/// Where a pipeline component's weights come from: one safetensors file (no config: the
/// caller infers it from shapes), or a transformers/diffusers folder with its `config.json`.
/// Either way `prefix` is what the file puts before the component's own names.
enum ComponentCheckpoint {
    case file(TensorSource, prefix: String, metadata: [String: String])
    case folder(TensorSource, config: [String: Any], configPath: String, prefix: String)

    /// Opens `path`: a single file whose names carry one of `prefixes` before `probe`; or a
    /// component folder (`config.json` + `<stem>*.safetensors`), or a pipeline folder holding
    /// one in `subfolder`. Folders are probed the same way: transformers 5 saves
    /// `CLIPTextModel` without the `text_model.` prefix that transformers 4 wrote.
    static func open(_ path: String, subfolder: String, stem: String = "model", probe: String, prefixes: [String],
                     classNames: [String], kind: String) throws -> ComponentCheckpoint {
        var folder = URL(fileURLWithPath: path)
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw ModelError.notAModel(path: path, reason: "no such file or folder")
        }
        func probedPrefix(_ source: TensorSource) throws -> String {
            guard let prefix = prefixes.first(where: { source.contains($0 + probe) }) else {
                let spellings = prefixes.map { "'\($0)\(probe)'" }.joined(separator: ", ")
                throw ModelError.notAModel(path: source.description, reason: "no tensor \(spellings) (not a \(kind))")
            }
            return prefix
        }
        if !isFolder.boolValue {
            let file = try SafeTensorsFile(path: path)
            let source = try TensorSource(files: [file], description: path)
            return .file(source, prefix: try probedPrefix(source), metadata: file.metadata)
        }
        if FileManager.default.fileExists(atPath: folder.appendingPathComponent("\(subfolder)/config.json").path) {
            folder = folder.appendingPathComponent(subfolder)
        }
        let configURL = folder.appendingPathComponent("config.json")
        let object = try CheckpointFiles.config(configURL, expecting: classNames)
        let files = try CheckpointFiles.load(folder: folder, stem: stem)
        let source = try TensorSource(files: files, description: folder.path)
        return .folder(source, config: object, configPath: configURL.path, prefix: try probedPrefix(source))
    }

    /// Ids [B][L] as the I64 `input_ids` tensor.
    static func ids(_ ids: [[Int]]) throws -> HostTensor {
        let batch = ids.count, length = ids.first?.count ?? 0
        guard batch > 0, length > 0, ids.allSatisfy({ $0.count == length }) else {
            throw ModelError.invalidInputs("input_ids must be [B, L] with B, L > 0")
        }
        return HostTensor(shape: [batch, length], dtype: .int64, values: ids.flatMap { $0.map(Double.init) })
    }
}

/// One value of a JSON config, checked.
func configValue<T>(_ object: [String: Any], _ key: String, _ fallback: T? = nil, path: String) throws -> T {
    if let value = object[key] as? T { return value }
    if let fallback { return fallback }
    throw ModelError.notAModel(path: path, reason: "the config has no valid '\(key)'")
}
