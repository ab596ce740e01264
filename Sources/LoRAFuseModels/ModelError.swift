import LoRAFuse
/// Why a model could not be loaded or run: one line naming the file, tensor and shapes.
public enum ModelError: Error, Sendable, CustomStringConvertible, Equatable {
    case notAModel(path: String, reason: String)
    case missingTensor(name: String, source: String)
    case shapeMismatch(name: String, expected: Shape, actual: Shape, source: String)
    case unsupportedDType(name: String, dtype: DType, source: String)
    case invalidInputs(String)

    public var description: String {
        switch self {
        case let .notAModel(path, reason): "\(path): cannot be loaded: \(reason)"
        case let .missingTensor(name, source): "\(source): missing tensor '\(name)'"
        case let .shapeMismatch(name, expected, actual, source):
            "\(source): tensor '\(name)' has shape \(actual), the config expects \(expected)"
        case let .unsupportedDType(name, dtype, source): "\(source): tensor '\(name)' is \(dtype.name); weights must be F32, F16, BF16, F8 (E4M3, E5M2) or a GGUF type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K…Q6_K)"
        case let .invalidInputs(message): "inputs: \(message)"
        }
    }
}

/// Named tensors from one or several safetensors files (a sharded checkpoint), or from one
/// GGUF file, memory-mapped.
public struct TensorSource: Sendable {
    public let description: String
    private let files: [SafeTensorsFile]
    private let fileByName: [String: Int]
    private let gguf: GGUFFile?

    /// The tensors of a GGUF file, every one a view of the mapping in its stored type
    /// (block-quantized ones stay quantized).
    public init(gguf: GGUFFile) {
        self.gguf = gguf
        files = []
        description = gguf.path
        fileByName = Dictionary(uniqueKeysWithValues: gguf.tensors.enumerated().map { ($1.name, $0) })
    }

    /// The same with every tensor known by `rename(ggufName)` (llama.cpp's short names seen
    /// under transformers' names); names it maps to nil keep their own. Two tensors mapped to
    /// one name are an error.
    public init(gguf: GGUFFile, rename: (String) -> String?) throws(ModelError) {
        self.gguf = gguf
        files = []
        description = gguf.path
        var index: [String: Int] = [:]
        for (position, tensor) in gguf.tensors.enumerated() {
            let name = rename(tensor.name) ?? tensor.name
            if let first = index.updateValue(position, forKey: name) {
                throw ModelError.notAModel(path: gguf.path, reason: "tensors '\(gguf.tensors[first].name)' and '\(tensor.name)' are both \(name)")
            }
        }
        fileByName = index
    }

    /// A tensor named in two files (two shards, or a shard and a stray copy) is an error:
    /// which copy would win is an accident of the file order.
    public init(files: [SafeTensorsFile], description: String) throws(ModelError) {
        self.files = files
        gguf = nil
        self.description = description
        var index: [String: Int] = [:]
        for (position, file) in files.enumerated() {
            for name in file.names {
                if let first = index.updateValue(position, forKey: name) {
                    throw ModelError.notAModel(path: description, reason:
                        "tensor '\(name)' is in both \(files[first].path) and \(file.path)")
                }
            }
        }
        fileByName = index
    }

    public var names: [String] { Array(fileByName.keys) }

    /// The shape of tensor `name`, read from the header alone.
    public func shape(_ name: String) throws -> Shape {
        guard let position = fileByName[name] else { throw ModelError.missingTensor(name: name, source: description) }
        if let gguf { return gguf.tensors[position].shape }
        return try files[position].tensor(named: name).shape
    }

    /// How many numbered children `<head>.N.` the names have (blocks, layers).
    public func childCount(_ head: String) -> Int {
        Set(fileByName.keys.compactMap { name -> Int? in
            guard name.hasPrefix(head + ".") else { return nil }
            return Int(name.dropFirst(head.count + 1).split(separator: ".").first ?? "")
        }).count
    }
    public func contains(_ name: String) -> Bool { fileByName[name] != nil }

    public func tensor(_ name: String) throws -> HostTensor {
        guard let position = fileByName[name] else { throw ModelError.missingTensor(name: name, source: description) }
        if let gguf { return gguf.hostTensor(gguf.tensors[position]) }
        return try files[position].tensor(named: name)
    }

    /// The tensor, checked against the shape the config implies and for a weight dtype
    /// (float8 and the GGUF block types included: matmuls read them as stored, vectors are
    /// widened in the graph).
    public func tensor(_ name: String, shape: Shape) throws -> HostTensor {
        let value = try tensor(name)
        guard value.shape == shape else {
            throw ModelError.shapeMismatch(name: name, expected: shape, actual: value.shape, source: description)
        }
        guard DType.linearWeightTypes.contains(value.dtype) else {
            throw ModelError.unsupportedDType(name: name, dtype: value.dtype, source: description)
        }
        return value
    }

    /// The per-tensor scale of a "scaled fp8" weight: ComfyUI stores `<layer>.scale_weight`
    /// (one float) beside `<layer>.weight`, whose value is then the stored fp8 × the scale.
    /// Nil when the file has no scale for `weightName`; an error when it is not one finite,
    /// positive float.
    public func weightScale(_ weightName: String) throws -> Float? {
        guard weightName.hasSuffix(".weight") else { return nil }
        let name = String(weightName.dropLast(".weight".count)) + ".scale_weight"
        guard contains(name) else { return nil }
        let value = try tensor(name)
        guard value.shape.elementCount == 1, DType.weightTypes.contains(value.dtype) else {
            throw ModelError.notAModel(path: description, reason: "\(name) is \(value.dtype.name) \(value.shape), not one float scale")
        }
        let scale = value.floats()[0]
        guard scale.isFinite, scale > 0 else {
            throw ModelError.notAModel(path: description, reason: "\(name) is \(scale), not a finite positive scale")
        }
        return scale
    }
}
