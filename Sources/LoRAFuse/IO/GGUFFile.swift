#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a GGUF file cannot be read: one line with the path and what is wrong where.
public struct GGUFError: Error, Sendable, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { "\(path): not a readable GGUF file: \(reason)" }
}

/// A metadata value of a GGUF file.
public indirect enum GGUFValue: Sendable, Equatable {
    case unsigned(UInt64)
    case signed(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    /// The value as an integer, where it is one that fits.
    public var integer: Int? {
        switch self {
        case let .unsigned(value): value <= UInt64(Int.max) ? Int(value) : nil
        case let .signed(value): Int(value)
        default: nil
        }
    }

    public var string: String? { if case let .string(value) = self { value } else { nil } }
}

/// One tensor of a GGUF file: its name, shape (outermost first, as PyTorch writes it; GGUF
/// lists the extents innermost first), element type and where its bytes lie.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let shape: Shape
    public let type: GGMLType
    /// Byte offset in the file and byte count.
    public let offset: Int
    public let byteCount: Int
}

/// A GGUF file (llama.cpp's and stable-diffusion.cpp's format, versions 2 and 3), memory-mapped
/// and validated whole before anything reads it, as strictly as `SafeTensorsFile`: the magic and
/// version, every metadata key and value, every tensor's name (unique, at most 64 bytes, as
/// ggml's limit), extents (at most 4, innermost a whole number of blocks, no overflow), type (one
/// LoRAFuse reads), and offset (aligned to `general.alignment`, inside the data section, tensors
/// not overlapping). No allocation is sized by a count the file gives before the bytes backing
/// it are known to exist; a hostile header is one `GGUFError`, never a crash or a hang.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    /// Metadata in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [GGUFTensorInfo]
    /// The data section's alignment (`general.alignment`, default 32).
    public let alignment: Int
    private let file: MappedFile
    private let indexByName: [String: Int]

    /// ggml's limits: tensor names (GGML_MAX_NAME) and dimensions (GGML_MAX_DIMS).
    public static let maximumNameBytes = 64
    public static let maximumDimensions = 4
    /// Nesting of metadata arrays (GGUF allows arrays of arrays; real files use one level).
    static let maximumArrayDepth = 3

    public init(path: String) throws(GGUFError) {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw GGUFError(path: path, "\(error)") }
        var reader = Reader(base: file.baseAddress, size: file.size, path: path)
        guard file.size >= 24 else { throw GGUFError(path: path, "\(file.size) bytes, shorter than a GGUF header (24)") }
        guard try reader.u32() == 0x4655_4747 else { throw GGUFError(path: path, "no GGUF magic at the start") }
        version = try reader.u32()
        guard version == 2 || version == 3 else {
            throw GGUFError(path: path, "version \(version) (LoRAFuse reads GGUF 2 and 3)")
        }
        let tensorCount = try reader.u64(), keyCount = try reader.u64()
        // Each key takes at least 12 bytes (length, type) and each tensor info at least 28.
        guard keyCount <= UInt64(reader.remaining / 12), tensorCount <= UInt64(reader.remaining / 28) else {
            throw GGUFError(path: path, "the header claims \(keyCount) metadata keys and \(tensorCount) tensors, more than \(file.size) bytes can hold")
        }
        var metadata: [(key: String, value: GGUFValue)] = []
        var keys = Set<String>()
        for _ in 0..<Int(keyCount) {
            let key = try reader.string(what: "a metadata key")
            guard keys.insert(key).inserted else { throw GGUFError(path: path, "metadata key \(jsonQuoted(key)) appears twice") }
            let type = try reader.u32()
            metadata.append((key, try reader.value(type: type, depth: 0, key: key)))
        }
        self.metadata = metadata
        var alignment = 32
        if let value = metadata.first(where: { $0.key == "general.alignment" })?.value {
            guard let given = value.integer, given > 0, given <= 1 << 20, given & (given - 1) == 0 else {
                throw GGUFError(path: path, "general.alignment \(value) is not a power of two up to 1 MiB")
            }
            alignment = given
        }
        self.alignment = alignment

        var infos: [(name: String, dims: [Int], type: GGMLType, offset: UInt64)] = []
        var names = [String: Int]()
        for index in 0..<Int(tensorCount) {
            let name = try reader.string(what: "tensor \(index)'s name")
            guard name.utf8.count <= Self.maximumNameBytes else {
                throw GGUFError(path: path, "tensor name \(jsonQuoted(String(name.prefix(80)))) is longer than \(Self.maximumNameBytes) bytes")
            }
            guard names[name] == nil else { throw GGUFError(path: path, "tensor \(jsonQuoted(name)) appears twice") }
            names[name] = index
            let rank = try reader.u32()
            guard rank >= 1, rank <= UInt32(Self.maximumDimensions) else {
                throw GGUFError(path: path, "tensor \(jsonQuoted(name)) has \(rank) dimensions (1 to \(Self.maximumDimensions))")
            }
            var dims: [Int] = []
            for _ in 0..<rank {
                let extent = try reader.u64()
                guard extent <= UInt64(Int32.max) else { throw GGUFError(path: path, "tensor \(jsonQuoted(name)) has an extent of \(extent)") }
                dims.append(Int(extent))
            }
            let raw = try reader.u32()
            guard let type = GGMLType(rawValue: raw) else {
                throw GGUFError(path: path, "tensor \(jsonQuoted(name)) is \(GGMLType.name(of: raw)), a type LoRAFuse does not read "
                    + "(it reads \(GGMLType.allCases.map(\.description).joined(separator: ", ")))")
            }
            infos.append((name, dims, type, try reader.u64()))
        }
        // The data section starts at the next multiple of the alignment.
        let dataStart = (reader.offset + alignment - 1) / alignment * alignment
        guard dataStart <= file.size else { throw GGUFError(path: path, "the file ends before its data section") }
        var tensors: [GGUFTensorInfo] = []
        for info in infos {
            var elements = 1
            for extent in info.dims {
                let (product, overflow) = elements.multipliedReportingOverflow(by: extent)
                guard !overflow else { throw GGUFError(path: path, "tensor \(jsonQuoted(info.name)) has too many elements") }
                elements = product
            }
            guard info.dims[0] % info.type.blockElements == 0, let bytes = info.type.byteCount(elements: elements) else {
                throw GGUFError(path: path, "tensor \(jsonQuoted(info.name)) rows of \(info.dims[0]) are not whole \(info.type) blocks of \(info.type.blockElements)")
            }
            guard info.offset % UInt64(alignment) == 0 else {
                throw GGUFError(path: path, "tensor \(jsonQuoted(info.name)) starts at \(info.offset), not a multiple of the alignment \(alignment)")
            }
            guard info.offset <= UInt64(file.size - dataStart), bytes <= file.size - dataStart - Int(info.offset) else {
                throw GGUFError(path: path, "tensor \(jsonQuoted(info.name)) (\(bytes) bytes at \(info.offset)) lies past the end of the file")
            }
            tensors.append(GGUFTensorInfo(name: info.name, shape: Shape(info.dims.reversed()), type: info.type,
                                          offset: dataStart + Int(info.offset), byteCount: bytes))
        }
        let byOffset = tensors.sorted { $0.offset < $1.offset }
        for (first, second) in zip(byOffset, byOffset.dropFirst()) where first.offset + first.byteCount > second.offset {
            throw GGUFError(path: path, "tensors \(jsonQuoted(first.name)) and \(jsonQuoted(second.name)) overlap")
        }
        self.tensors = tensors
        indexByName = names
    }

    /// Whether the file at `path` starts with GGUF's magic (whatever its name).
    public static func hasMagic(_ path: String) -> Bool {
        guard case let .success(opened) = InputFile.openRegular(path) else { return false }
        defer { close(opened.descriptor) }
        var magic: UInt32 = 0
        return read(opened.descriptor, &magic, 4) == 4 && magic == 0x4655_4747
    }

    public func tensor(named name: String) -> GGUFTensorInfo? { indexByName[name].map { tensors[$0] } }

    /// The metadata value of `key`.
    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }

    /// The stored bytes of `tensor` (a view of the mapping).
    public func bytes(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: file.baseAddress! + tensor.offset, count: tensor.byteCount)
    }

    /// `tensor` as a host tensor viewing the mapping (no copy), in its own type: F32, F16 and
    /// BF16 as they are, the block-quantized types as the matching `DType` (Q8_0, Q4_K, …),
    /// whose blocks the matmul kernels dequantize as they read them.
    public func hostTensor(_ tensor: GGUFTensorInfo) -> HostTensor {
        let type = TensorType(tensor.shape, DType(tensor.type))
        guard tensor.byteCount > 0 else { return HostTensor(type: type, storage: TensorStorage(borrowing: UnsafeRawPointer(bitPattern: 64)!, byteCount: 0, owner: self)) }
        return HostTensor(type: type, storage: TensorStorage(borrowing: file.baseAddress! + tensor.offset, byteCount: tensor.byteCount, owner: self, fileMapping: true))
    }

    /// `tensor` widened to float32 (for tests and references: the engine keeps quantized
    /// weights quantized).
    public func dequantized(_ tensor: GGUFTensorInfo) -> [Float] {
        let count = tensor.shape.elementCount
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { tensor.type.dequantize(file.baseAddress! + tensor.offset, count: count, into: buffer.baseAddress!) }
            initialized = count
        }
    }

    /// Bounds-checked little-endian reads of the header.
    struct Reader {
        let base: UnsafeRawPointer?
        let size: Int
        let path: String
        var offset = 0
        var remaining: Int { size - offset }

        mutating func take(_ count: Int, what: String) throws(GGUFError) -> UnsafeRawPointer {
            guard count >= 0, count <= remaining, let base else {
                throw GGUFError(path: path, "the header ends inside \(what) (at byte \(offset), \(count) bytes needed)")
            }
            defer { offset += count }
            return base + offset
        }

        mutating func u32() throws(GGUFError) -> UInt32 { try take(4, what: "a 32-bit field").loadUnaligned(as: UInt32.self) }
        mutating func u64() throws(GGUFError) -> UInt64 { try take(8, what: "a 64-bit field").loadUnaligned(as: UInt64.self) }

        mutating func string(what: String) throws(GGUFError) -> String {
            let length = try u64()
            guard length <= UInt64(remaining) else {
                throw GGUFError(path: path, "\(what) claims \(length) bytes at byte \(offset), past the end of the file")
            }
            let bytes = UnsafeRawBufferPointer(start: try take(Int(length), what: what), count: Int(length))
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw GGUFError(path: path, "\(what) at byte \(offset - Int(length)) is not valid UTF-8")
            }
            return text
        }

        /// The smallest encoding of one value of `type` (so a count can be checked before reading).
        static func minimumBytes(_ type: UInt32) -> Int? {
            switch type {
            case 0, 1, 7: 1
            case 2, 3: 2
            case 4, 5, 6: 4
            case 10, 11, 12: 8
            case 8: 8
            case 9: 12
            default: nil
            }
        }

        mutating func value(type: UInt32, depth: Int, key: String) throws(GGUFError) -> GGUFValue {
            switch type {
            case 0: return .unsigned(UInt64(try take(1, what: key).load(as: UInt8.self)))
            case 1: return .signed(Int64(try take(1, what: key).load(as: Int8.self)))
            case 2: return .unsigned(UInt64(try take(2, what: key).loadUnaligned(as: UInt16.self)))
            case 3: return .signed(Int64(try take(2, what: key).loadUnaligned(as: Int16.self)))
            case 4: return .unsigned(UInt64(try u32()))
            case 5: return .signed(Int64(Int32(bitPattern: try u32())))
            case 6: return .float(Double(Float(bitPattern: try u32())))
            case 7:
                let byte = try take(1, what: key).load(as: UInt8.self)
                guard byte <= 1 else { throw GGUFError(path: path, "metadata \(jsonQuoted(key)): bool \(byte) is not 0 or 1") }
                return .bool(byte == 1)
            case 8: return .string(try string(what: "metadata \(jsonQuoted(key))"))
            case 10: return .unsigned(try u64())
            case 11: return .signed(Int64(bitPattern: try u64()))
            case 12: return .float(Double(bitPattern: try u64()))
            case 9:
                guard depth < GGUFFile.maximumArrayDepth else {
                    throw GGUFError(path: path, "metadata \(jsonQuoted(key)): arrays nested deeper than \(GGUFFile.maximumArrayDepth)")
                }
                let elementType = try u32()
                let count = try u64()
                guard let minimum = Self.minimumBytes(elementType) else {
                    throw GGUFError(path: path, "metadata \(jsonQuoted(key)): array of unknown type \(elementType)")
                }
                guard count <= UInt64(remaining / minimum) else {
                    throw GGUFError(path: path, "metadata \(jsonQuoted(key)): an array of \(count) values cannot fit in the \(remaining) bytes left")
                }
                var values: [GGUFValue] = []
                values.reserveCapacity(Int(count))
                for _ in 0..<Int(count) { values.append(try value(type: elementType, depth: depth + 1, key: key)) }
                return .array(values)
            default:
                throw GGUFError(path: path, "metadata \(jsonQuoted(key)) has unknown value type \(type)")
            }
        }
    }
}
