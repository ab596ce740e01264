/// Element types, named as safetensors names them (`rawValue`).
public enum DType: String, Sendable, CaseIterable, Hashable, Codable {
    case float64 = "F64"
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    case float8E4M3 = "F8_E4M3"
    case float8E5M2 = "F8_E5M2"
    case int64 = "I64"
    case int32 = "I32"
    case int16 = "I16"
    case int8 = "I8"
    case uint64 = "U64"
    case uint32 = "U32"
    case uint16 = "U16"
    case uint8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float64, .int64, .uint64: 8
        case .float32, .int32, .uint32: 4
        case .float16, .bfloat16, .int16, .uint16: 2
        case .float8E4M3, .float8E5M2, .int8, .uint8, .bool: 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .float64, .float32, .float16, .bfloat16, .float8E4M3, .float8E5M2: true
        default: false
        }
    }

    public var isInteger: Bool { !isFloatingPoint && self != .bool }

    /// Types a weight may have and still be read by kernels without expanding it in memory.
    public static let weightTypes: Set<DType> = [.float32, .float16, .bfloat16]
    /// Types the matmul and embedding kernels also read for their matrix operand: the
    /// weight types plus float8 (e4m3fn, e5m2), as ComfyUI's fp8 checkpoints store them.
    public static let matrixTypes: Set<DType> = weightTypes.union([.float8E4M3, .float8E5M2])

    /// The safetensors spelling, e.g. `BF16`.
    public var name: String { rawValue }
}
