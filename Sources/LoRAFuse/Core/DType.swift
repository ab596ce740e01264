/// Element types, named as safetensors names them (`rawValue`), plus the block-quantized
/// GGUF types (named as ggml names them: `Q8_0`, `Q4_K`, …), whose values are stored in
/// blocks of `blockElements` values and `blockBytes` bytes along a tensor's last axis.
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
    case q4_0 = "Q4_0"
    case q4_1 = "Q4_1"
    case q5_0 = "Q5_0"
    case q5_1 = "Q5_1"
    case q8_0 = "Q8_0"
    case q2K = "Q2_K"
    case q3K = "Q3_K"
    case q4K = "Q4_K"
    case q5K = "Q5_K"
    case q6K = "Q6_K"

    /// Bytes per element; 0 for the block-quantized types, whose sizes come from
    /// `byteCount(elements:)` (a whole number of blocks).
    public var byteSize: Int {
        switch self {
        case .float64, .int64, .uint64: 8
        case .float32, .int32, .uint32: 4
        case .float16, .bfloat16, .int16, .uint16: 2
        case .float8E4M3, .float8E5M2, .int8, .uint8, .bool: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2K, .q3K, .q4K, .q5K, .q6K: 0
        }
    }

    /// The GGML block layout of a block-quantized type; nil for the element types.
    public var blockFormat: GGMLType? {
        switch self {
        case .q4_0: .q4_0
        case .q4_1: .q4_1
        case .q5_0: .q5_0
        case .q5_1: .q5_1
        case .q8_0: .q8_0
        case .q2K: .q2_K
        case .q3K: .q3_K
        case .q4K: .q4_K
        case .q5K: .q5_K
        case .q6K: .q6_K
        default: nil
        }
    }

    /// True for the GGUF block-quantized types.
    public var isBlockQuantized: Bool { blockFormat != nil }
    /// Values per block: 1 for element types, 32 or 256 for the block-quantized ones.
    public var blockElements: Int { blockFormat?.blockElements ?? 1 }
    /// Bytes per block (`byteSize` for element types).
    public var blockBytes: Int { blockFormat?.blockBytes ?? byteSize }

    /// Bytes that `elements` values occupy; for a block-quantized type `elements` must be a
    /// whole number of blocks (shapes are checked for that where tensors are made).
    @inline(__always)
    public func byteCount(elements: Int) -> Int {
        blockElements == 1 ? elements &* byteSize : elements / blockElements &* blockBytes
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .float64, .float32, .float16, .bfloat16, .float8E4M3, .float8E5M2: true
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2K, .q3K, .q4K, .q5K, .q6K: true
        default: false
        }
    }

    public var isInteger: Bool { !isFloatingPoint && self != .bool }

    /// Types a weight may have and still be read by kernels without expanding it in memory.
    public static let weightTypes: Set<DType> = [.float32, .float16, .bfloat16]
    /// Types the matmul and embedding kernels also read for their matrix operand: the
    /// weight types plus float8 (e4m3fn, e5m2), as ComfyUI's fp8 checkpoints store them.
    public static let matrixTypes: Set<DType> = weightTypes.union([.float8E4M3, .float8E5M2])
    /// The GGUF block-quantized types; a matmul reads them as its `b` operand (a weight
    /// `[n, k]` used transposed, `k` a whole number of blocks), dequantizing block by block.
    public static let blockQuantizedTypes: Set<DType> = Set(allCases.filter(\.isBlockQuantized))
    /// Every type a matmul's `b` may have.
    public static let linearWeightTypes: Set<DType> = matrixTypes.union(blockQuantizedTypes)

    /// The element type a GGUF tensor type is held as in the graph (ggml's name is the DType's).
    public init(_ ggml: GGMLType) {
        guard let dtype = DType(rawValue: ggml.description) else { preconditionFailure("GGML type \(ggml) has no DType") }
        self = dtype
    }

    /// The safetensors spelling, e.g. `BF16`.
    public var name: String { rawValue }
}
