/// Why a safetensors file was rejected. Each names the file and, where there is one,
/// the tensor, so the user sees one line that says what is wrong and where.
public struct SafeTensorsError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What is wrong with the file.
    public enum Kind: Sendable, Equatable {
        case cannotOpen(String)
        case fileTooSmall(size: Int)
        case headerLengthOutOfRange(declared: UInt64, available: Int)
        case headerTooLarge(declared: UInt64, limit: Int)
        case invalidJSON(String)
        case invalidHeader(String)
        case unknownDType(String)
        case invalidShape(String)
        case sizeMismatch(shape: Shape, dtype: DType, expectedBytes: Int, actualBytes: Int)
        case offsetsOutOfRange(begin: Int, end: Int, dataSize: Int)
        case overlapping(other: String)
        case tensorNotFound
        case duplicateName
        case writeFailed(String)
    }

    public let path: String
    public let tensor: String?
    public let kind: Kind

    /// An error in `path` (and `tensor`, where one is to blame).
    public init(path: String, tensor: String? = nil, _ kind: Kind) {
        self.path = path
        self.tensor = tensor
        self.kind = kind
    }

    public var description: String {
        let subject = tensor.map { "\(path): tensor '\($0)'" } ?? path
        switch kind {
        case let .cannotOpen(reason): return "\(subject): cannot open: \(reason)"
        case let .fileTooSmall(size): return "\(subject): \(size) bytes is too small for a safetensors file (needs an 8-byte header length)"
        case let .headerLengthOutOfRange(declared, available):
            return "\(subject): header length \(declared) runs past the end of the file (\(available) bytes after the length field)"
        case let .headerTooLarge(declared, limit):
            return "\(subject): header length \(declared) exceeds the \(limit)-byte limit"
        case let .invalidJSON(reason): return "\(subject): header is not valid JSON: \(reason)"
        case let .invalidHeader(reason): return "\(subject): invalid header: \(reason)"
        case let .unknownDType(name): return "\(subject): unknown dtype '\(name)'"
        case let .invalidShape(reason): return "\(subject): invalid shape: \(reason)"
        case let .sizeMismatch(shape, dtype, expected, actual):
            return "\(subject): shape \(shape) of \(dtype.name) needs \(expected) bytes but data_offsets span \(actual)"
        case let .offsetsOutOfRange(begin, end, dataSize):
            return "\(subject): data_offsets [\(begin), \(end)] outside the \(dataSize)-byte data section"
        case let .overlapping(other): return "\(subject): data overlaps tensor '\(other)'"
        case .tensorNotFound: return "\(subject): no such tensor in the file"
        case .duplicateName: return "\(subject): written twice"
        case let .writeFailed(reason): return "\(subject): cannot write: \(reason)"
        }
    }
}
