/// One tensor as a safetensors header describes it.
public struct SafeTensorsEntry: Sendable, Hashable {
    public let name: String
    public let dtype: DType
    public let shape: Shape
    /// Byte range relative to the start of the data section.
    public let dataRange: Range<Int>
}

/// A safetensors file opened for reading: the header is parsed and fully validated when
/// the file is opened; tensor data stays in the memory mapping until a kernel reads it.
///
/// Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section.
public final class SafeTensorsFile: Sendable {
    /// Upper bound on the JSON header (the reference implementation uses the same 100 MB).
    public static let maximumHeaderLength = 100_000_000

    public let path: String
    /// Tensors in the order the header lists them.
    public let entries: [SafeTensorsEntry]
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    /// Metadata keys in header order.
    public let metadataKeys: [String]
    private let mapping: MappedFile
    private let dataOffset: Int
    private let indexByName: [String: Int]

    /// Maps `path` and validates its header completely before anything else reads it.
    public init(path: String) throws(SafeTensorsError) {
        let mapping = try MappedFile(path: path)
        self.path = path
        self.mapping = mapping
        guard mapping.size >= 8, let base = mapping.baseAddress else {
            throw SafeTensorsError(path: path, .fileTooSmall(size: mapping.size))
        }
        let declared = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        let available = mapping.size - 8
        guard declared <= UInt64(available) else {
            throw SafeTensorsError(path: path, .headerLengthOutOfRange(declared: declared, available: available))
        }
        guard declared <= UInt64(Self.maximumHeaderLength) else {
            throw SafeTensorsError(path: path, .headerTooLarge(declared: declared, limit: Self.maximumHeaderLength))
        }
        let headerLength = Int(declared)
        let headerBytes = [UInt8](UnsafeRawBufferPointer(start: base + 8, count: headerLength))
        dataOffset = 8 + headerLength
        let parsed = try Self.parseHeader(headerBytes, path: path, dataSize: mapping.size - dataOffset)
        entries = parsed.entries
        metadata = parsed.metadata
        metadataKeys = parsed.metadataKeys
        var index: [String: Int] = [:]
        for (position, entry) in entries.enumerated() { index[entry.name] = position }
        indexByName = index
    }

    public var names: [String] { entries.map(\.name) }

    /// The header entry of tensor `name`.
    public func entry(named name: String) -> SafeTensorsEntry? {
        indexByName[name].map { entries[$0] }
    }

    /// Whether the file holds tensor `name`.
    public func contains(_ name: String) -> Bool { indexByName[name] != nil }

    /// The tensor's bytes as a view into the mapping (no copy).
    public func tensor(named name: String) throws(SafeTensorsError) -> HostTensor {
        guard let entry = entry(named: name) else { throw SafeTensorsError(path: path, tensor: name, .tensorNotFound) }
        return tensor(entry)
    }

    /// The tensor of `entry`, a zero-copy view of the mapped file.
    public func tensor(_ entry: SafeTensorsEntry) -> HostTensor {
        let type = TensorType(entry.shape, entry.dtype)
        guard let base = mapping.baseAddress, !entry.dataRange.isEmpty else {
            return HostTensor(shape: entry.shape, dtype: entry.dtype) { _ in }
        }
        let storage = TensorStorage(borrowing: base + dataOffset + entry.dataRange.lowerBound,
                                    byteCount: entry.dataRange.count, owner: mapping, fileMapping: true)
        return HostTensor(type: type, storage: storage)
    }

    /// Every tensor, by name.
    public func allTensors() -> [String: HostTensor] {
        Dictionary(uniqueKeysWithValues: entries.map { ($0.name, tensor($0)) })
    }

    // MARK: - Header validation

    struct ParsedHeader {
        var entries: [SafeTensorsEntry]
        var metadata: [String: String]
        var metadataKeys: [String]
    }

    static func parseHeader(_ bytes: [UInt8], path: String, dataSize: Int) throws(SafeTensorsError) -> ParsedHeader {
        let root: JSONValue
        do {
            root = try StrictJSONParser.parse(bytes)
        } catch {
            throw SafeTensorsError(path: path, .invalidJSON(error.description))
        }
        guard case let .object(members) = root else {
            throw SafeTensorsError(path: path, .invalidHeader("the header is \(root.kindName), expected an object"))
        }
        var result = ParsedHeader(entries: [], metadata: [:], metadataKeys: [])
        for (name, value) in members {
            if name == "__metadata__" {
                guard case let .object(pairs) = value else {
                    throw SafeTensorsError(path: path, .invalidHeader("__metadata__ is \(value.kindName), expected an object of strings"))
                }
                for (key, item) in pairs {
                    guard case let .string(text) = item else {
                        throw SafeTensorsError(path: path, .invalidHeader("__metadata__ value '\(key)' is \(item.kindName), expected a string"))
                    }
                    result.metadata[key] = text
                    result.metadataKeys.append(key)
                }
                continue
            }
            result.entries.append(try parseEntry(name: name, value: value, path: path, dataSize: dataSize))
        }
        // No two tensors may share bytes (empty tensors occupy none).
        let byStart = result.entries.filter { !$0.dataRange.isEmpty }
            .sorted { ($0.dataRange.lowerBound, $0.dataRange.upperBound) < ($1.dataRange.lowerBound, $1.dataRange.upperBound) }
        for (previous, next) in zip(byStart, byStart.dropFirst()) where next.dataRange.lowerBound < previous.dataRange.upperBound {
            throw SafeTensorsError(path: path, tensor: next.name, .overlapping(other: previous.name))
        }
        return result
    }

    static func parseEntry(name: String, value: JSONValue, path: String, dataSize: Int) throws(SafeTensorsError) -> SafeTensorsEntry {
        func invalid(_ reason: String) -> SafeTensorsError { SafeTensorsError(path: path, tensor: name, .invalidHeader(reason)) }
        guard case let .object(fields) = value else { throw invalid("entry is \(value.kindName), expected an object") }
        var dtypeValue: JSONValue?, shapeValue: JSONValue?, offsetsValue: JSONValue?
        for (key, field) in fields {
            switch key {
            case "dtype": dtypeValue = field
            case "shape": shapeValue = field
            case "data_offsets": offsetsValue = field
            default: continue  // unknown fields are ignored, as the reference reader does
            }
        }
        guard let dtypeValue else { throw invalid("missing 'dtype'") }
        guard let shapeValue else { throw invalid("missing 'shape'") }
        guard let offsetsValue else { throw invalid("missing 'data_offsets'") }
        guard case let .string(dtypeName) = dtypeValue else { throw invalid("'dtype' is \(dtypeValue.kindName), expected a string") }
        guard let dtype = DType(rawValue: dtypeName), !dtype.isBlockQuantized else {
            throw SafeTensorsError(path: path, tensor: name, .unknownDType(dtypeName))
        }
        guard case let .array(dimensionValues) = shapeValue else {
            throw SafeTensorsError(path: path, tensor: name, .invalidShape("'shape' is \(shapeValue.kindName), expected an array"))
        }
        var dimensions: [Int] = []
        for dimension in dimensionValues {
            guard let extent = dimension.nonNegativeInteger else {
                throw SafeTensorsError(path: path, tensor: name, .invalidShape("dimension \(describe(dimension)) is not a non-negative integer"))
            }
            dimensions.append(extent)
        }
        let shape = Shape(dimensions)
        guard case let .array(offsetValues) = offsetsValue, offsetValues.count == 2,
              let begin = offsetValues[0].nonNegativeInteger, let end = offsetValues[1].nonNegativeInteger
        else { throw invalid("'data_offsets' must be two non-negative integers") }
        guard begin <= end else { throw invalid("data_offsets [\(begin), \(end)] end before they begin") }
        guard end <= dataSize else {
            throw SafeTensorsError(path: path, tensor: name, .offsetsOutOfRange(begin: begin, end: end, dataSize: dataSize))
        }
        guard let count = shape.checkedElementCount else {
            throw SafeTensorsError(path: path, tensor: name, .invalidShape("\(shape) has more elements than fit in memory"))
        }
        let (expectedBytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else {
            throw SafeTensorsError(path: path, tensor: name, .invalidShape("\(shape) of \(dtype.name) is larger than any file"))
        }
        guard expectedBytes == end - begin else {
            throw SafeTensorsError(path: path, tensor: name,
                                   .sizeMismatch(shape: shape, dtype: dtype, expectedBytes: expectedBytes, actualBytes: end - begin))
        }
        return SafeTensorsEntry(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
    }

    private static func describe(_ value: JSONValue) -> String {
        if case let .number(text) = value { return text.count > 24 ? String(text.prefix(24)) + "…" : text }
        return value.kindName
    }
}
