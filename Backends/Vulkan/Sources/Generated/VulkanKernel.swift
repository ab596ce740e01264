// Generated from Shaders/kernels.json and the compiled SPIR-V by Tools/shaders/compile-shaders.sh
// (vulkan-shaders-gen). Do not edit: change the manifest or the shader, then recompile.

/// Element types of the weight operand (B of a matmul, the conv2d filter).
enum VulkanWeightFormat: String, CaseIterable, Sendable {
    case f32, f16, bf16, f8e4m3, f8e5m2
}

/// Element types of LoRA factors (float8 factors are not supported).
enum VulkanFactorFormat: String, CaseIterable, Sendable {
    case f32, f16, bf16
}

/// GGUF block-quantized weight types: the B of a Linear [N, K] read along K and dequantized in registers.
enum VulkanBlockWeightFormat: String, CaseIterable, Sendable {
    case q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k
}

/// Element type of a buffer read by convert.comp and the weight loaders.
/// `DTYPE_*` in the shaders (Shaders/generated/kernel_codes.glsl).
enum VulkanDTypeCode: UInt32, CaseIterable, Sendable {
    case f32 = 0
    case f16 = 1
    case bf16 = 2
    case i32 = 3
    case i64 = 4
    case f8e4m3 = 5
    case f8e5m2 = 6
}

/// binary.comp's operator.
/// `BINARY_*` in the shaders (Shaders/generated/kernel_codes.glsl).
enum VulkanBinaryCode: UInt32, CaseIterable, Sendable {
    case add = 0
    case sub = 1
    case mul = 2
    case div = 3
}

/// unary.comp's function; scale multiplies by the factor.
/// `UNARY_*` in the shaders (Shaders/generated/kernel_codes.glsl).
enum VulkanUnaryCode: UInt32, CaseIterable, Sendable {
    case gelu = 0
    case geluTanh = 1
    case quickGelu = 2
    case silu = 3
    case sigmoid = 4
    case relu = 5
    case tanh = 6
    case scale = 7
}

/// rowwise.comp's mode.
/// `ROWWISE_*` in the shaders (Shaders/generated/kernel_codes.glsl).
enum VulkanRowwiseCode: UInt32, CaseIterable, Sendable {
    case softmax = 0
    case layerNorm = 1
    case rmsNorm = 2
}

/// convert.comp's mode: gather rows by id, widen to F32, narrow F32 to F16 or BF16.
/// `CONVERT_*` in the shaders (Shaders/generated/kernel_codes.glsl).
enum VulkanConvertCode: UInt32, CaseIterable, Sendable {
    case gather = 0
    case widen = 1
    case narrowF16 = 2
    case narrowBF16 = 3
}

/// topk_control.comp's step: clear the histogram, select the bin after a pass, add the partial sums.
/// `TOPK_CONTROL_*` in the shaders (Shaders/generated/kernel_codes.glsl).
enum VulkanTopkControlCode: UInt32, CaseIterable, Sendable {
    case clear = 0
    case select = 1
    case finish = 2
}

/// Every compiled compute kernel; a kernel compiled per element format carries the format.
/// `allCases` is the manifest's variant list: the tests check each has its SPIR-V, and no
/// SPIR-V is shipped without a case.
enum VulkanKernel: Hashable, Sendable, CustomStringConvertible {
    case matmul(VulkanWeightFormat)
    case matmulTiled(VulkanWeightFormat)
    case matmulBlock(VulkanBlockWeightFormat)
    case matmulBlockTiled(VulkanBlockWeightFormat)
    case dequantize(VulkanBlockWeightFormat)
    case gatherBlock(VulkanBlockWeightFormat)
    case matmulVec4(VulkanWeightFormat)
    case matmulTexel(VulkanWeightFormat)
    case conv2d(VulkanWeightFormat)
    case loraUpdate(VulkanFactorFormat)
    case loraUpdateVec4(VulkanFactorFormat)
    case loraGate
    case loraGateLowrank
    case attention
    case attentionRegisters
    case attentionTexel
    case binary
    case unary
    case rowwise
    case rope
    case copy
    case convert
    case topkHistogram
    case topkSum
    case topkControl

    static let allCases: [VulkanKernel] = [
        VulkanWeightFormat.allCases.map { .matmul($0) },
        VulkanWeightFormat.allCases.map { .matmulTiled($0) },
        VulkanBlockWeightFormat.allCases.map { .matmulBlock($0) },
        VulkanBlockWeightFormat.allCases.map { .matmulBlockTiled($0) },
        VulkanBlockWeightFormat.allCases.map { .dequantize($0) },
        VulkanBlockWeightFormat.allCases.map { .gatherBlock($0) },
        VulkanWeightFormat.allCases.map { .matmulVec4($0) },
        VulkanWeightFormat.allCases.map { .matmulTexel($0) },
        VulkanWeightFormat.allCases.map { .conv2d($0) },
        VulkanFactorFormat.allCases.map { .loraUpdate($0) },
        VulkanFactorFormat.allCases.map { .loraUpdateVec4($0) },
        [.loraGate],
        [.loraGateLowrank],
        [.attention],
        [.attentionRegisters],
        [.attentionTexel],
        [.binary],
        [.unary],
        [.rowwise],
        [.rope],
        [.copy],
        [.convert],
        [.topkHistogram],
        [.topkSum],
        [.topkControl],
    ].flatMap { $0 }

    /// The SPIR-V resource, `SPIRV/<name>.spv`.
    var spirvName: String {
        switch self {
        case .matmul(let format): "matmul_" + format.rawValue
        case .matmulTiled(let format): "matmul_tiled_" + format.rawValue
        case .matmulBlock(let format): "matmul_block_" + format.rawValue
        case .matmulBlockTiled(let format): "matmul_block_tiled_" + format.rawValue
        case .dequantize(let format): "dequantize_" + format.rawValue
        case .gatherBlock(let format): "gather_block_" + format.rawValue
        case .matmulVec4(let format): "matmul_vec4_" + format.rawValue
        case .matmulTexel(let format): "matmul_texel_" + format.rawValue
        case .conv2d(let format): "conv2d_" + format.rawValue
        case .loraUpdate(let format): "lora_update_" + format.rawValue
        case .loraUpdateVec4(let format): "lora_update_vec4_" + format.rawValue
        case .loraGate: "lora_gate"
        case .loraGateLowrank: "lora_gate_lowrank"
        case .attention: "attention"
        case .attentionRegisters: "attention_registers"
        case .attentionTexel: "attention_texel"
        case .binary: "binary"
        case .unary: "unary"
        case .rowwise: "rowwise"
        case .rope: "rope"
        case .copy: "copy"
        case .convert: "convert"
        case .topkHistogram: "topk_histogram"
        case .topkSum: "topk_sum"
        case .topkControl: "topk_control"
        }
    }

    var description: String { spirvName }

    /// The GLSL source in Shaders/.
    var source: String {
        switch self {
        case .matmul: "matmul.comp"
        case .matmulTiled: "matmul.comp"
        case .matmulBlock: "matmul_block.comp"
        case .matmulBlockTiled: "matmul.comp"
        case .dequantize: "dequantize.comp"
        case .gatherBlock: "gather_block.comp"
        case .matmulVec4: "matmul_vec4.comp"
        case .matmulTexel: "matmul_vec4.comp"
        case .conv2d: "conv2d.comp"
        case .loraUpdate: "lora_update.comp"
        case .loraUpdateVec4: "lora_update_vec4.comp"
        case .loraGate: "lora_gate.comp"
        case .loraGateLowrank: "lora_gate_lowrank.comp"
        case .attention: "attention.comp"
        case .attentionRegisters: "attention_registers.comp"
        case .attentionTexel: "attention_registers.comp"
        case .binary: "binary.comp"
        case .unary: "unary.comp"
        case .rowwise: "rowwise.comp"
        case .rope: "rope.comp"
        case .copy: "copy.comp"
        case .convert: "convert.comp"
        case .topkHistogram: "topk_histogram.comp"
        case .topkSum: "topk_sum.comp"
        case .topkControl: "topk_control.comp"
        }
    }

    /// Descriptor bindings of set 0, numbered from 0.
    var bindingCount: Int {
        switch self {
        case .matmul: 3
        case .matmulTiled: 3
        case .matmulBlock: 3
        case .matmulBlockTiled: 3
        case .dequantize: 2
        case .gatherBlock: 3
        case .matmulVec4: 3
        case .matmulTexel: 3
        case .conv2d: 4
        case .loraUpdate: 5
        case .loraUpdateVec4: 5
        case .loraGate: 11
        case .loraGateLowrank: 5
        case .attention: 5
        case .attentionRegisters: 5
        case .attentionTexel: 5
        case .binary: 3
        case .unary: 2
        case .rowwise: 4
        case .rope: 4
        case .copy: 2
        case .convert: 3
        case .topkHistogram: 3
        case .topkSum: 3
        case .topkControl: 4
        }
    }

    /// Bindings that are uniform texel buffers (the others are storage buffers).
    var texelBindings: Set<Int> {
        switch self {
        case .matmul: []
        case .matmulTiled: []
        case .matmulBlock: []
        case .matmulBlockTiled: []
        case .dequantize: []
        case .gatherBlock: []
        case .matmulVec4: []
        case .matmulTexel: [0, 1]
        case .conv2d: []
        case .loraUpdate: []
        case .loraUpdateVec4: []
        case .loraGate: []
        case .loraGateLowrank: []
        case .attention: []
        case .attentionRegisters: []
        case .attentionTexel: [1, 2]
        case .binary: []
        case .unary: []
        case .rowwise: []
        case .rope: []
        case .copy: []
        case .convert: []
        case .topkHistogram: []
        case .topkSum: []
        case .topkControl: []
        }
    }

    /// Specialization constants, `constant_id` 0..<count.
    var specializationCount: Int {
        switch self {
        case .matmul: 2
        case .matmulTiled: 2
        case .matmulBlock: 2
        case .matmulBlockTiled: 2
        case .dequantize: 0
        case .gatherBlock: 0
        case .matmulVec4: 2
        case .matmulTexel: 2
        case .conv2d: 2
        case .loraUpdate: 0
        case .loraUpdateVec4: 0
        case .loraGate: 0
        case .loraGateLowrank: 0
        case .attention: 1
        case .attentionRegisters: 2
        case .attentionTexel: 2
        case .binary: 0
        case .unary: 0
        case .rowwise: 0
        case .rope: 0
        case .copy: 0
        case .convert: 0
        case .topkHistogram: 0
        case .topkSum: 0
        case .topkControl: 0
        }
    }

    /// The push-constant struct its dispatches must pass.
    var constants: any VulkanPushConstants.Type {
        switch self {
        case .matmul: MatmulConstants.self
        case .matmulTiled: MatmulConstants.self
        case .matmulBlock: MatmulConstants.self
        case .matmulBlockTiled: MatmulConstants.self
        case .dequantize: DequantizeConstants.self
        case .gatherBlock: GatherBlockConstants.self
        case .matmulVec4: MatmulConstants.self
        case .matmulTexel: MatmulConstants.self
        case .conv2d: Conv2dConstants.self
        case .loraUpdate: LoraUpdateConstants.self
        case .loraUpdateVec4: LoraUpdateConstants.self
        case .loraGate: LoraGateConstants.self
        case .loraGateLowrank: LoraGateLowrankConstants.self
        case .attention: AttentionConstants.self
        case .attentionRegisters: AttentionConstants.self
        case .attentionTexel: AttentionConstants.self
        case .binary: BinaryConstants.self
        case .unary: UnaryConstants.self
        case .rowwise: RowwiseConstants.self
        case .rope: RopeConstants.self
        case .copy: CopyConstants.self
        case .convert: ConvertConstants.self
        case .topkHistogram: TopkHistogramConstants.self
        case .topkSum: TopkSumConstants.self
        case .topkControl: TopkControlConstants.self
        }
    }
}

/// 6 consecutive `uint`s of a push-constant block (a GLSL `uint name[6]`).
struct VulkanWords6: Sendable, Equatable {
    var words: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    /// `values` padded with zeros to 6.
    init(_ values: [UInt32]) {
        precondition(values.count <= 6, "\(values.count) values for 6 words")
        var words = [UInt32](repeating: 0, count: 6)
        words.replaceSubrange(0..<values.count, with: values)
        self.words = (words[0], words[1], words[2], words[3], words[4], words[5])
    }
    static func == (lhs: Self, rhs: Self) -> Bool {
        withUnsafeBytes(of: lhs.words) { left in withUnsafeBytes(of: rhs.words) { right in left.elementsEqual(right) } }
    }
}

/// 9 consecutive `uint`s of a push-constant block (a GLSL `uint name[9]`).
struct VulkanWords9: Sendable, Equatable {
    var words: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    /// `values` padded with zeros to 9.
    init(_ values: [UInt32]) {
        precondition(values.count <= 9, "\(values.count) values for 9 words")
        var words = [UInt32](repeating: 0, count: 9)
        words.replaceSubrange(0..<values.count, with: values)
        self.words = (words[0], words[1], words[2], words[3], words[4], words[5], words[6], words[7], words[8])
    }
    static func == (lhs: Self, rhs: Self) -> Bool {
        withUnsafeBytes(of: lhs.words) { left in withUnsafeBytes(of: rhs.words) { right in left.elementsEqual(right) } }
    }
}

/// Push constants of matmul.comp, matmul_block.comp, matmul_vec4.comp (`Parameters` there), laid out as their SPIR-V says.
struct MatmulConstants: VulkanPushConstants {
    var m: UInt32
    var n: UInt32
    var k: UInt32
    var aRowStride: UInt32
    var aColStride: UInt32
    var bRowStride: UInt32
    var bColStride: UInt32
    var batch1: UInt32
    var batch2: UInt32
    var aBatch0: UInt32
    var aBatch1: UInt32
    var aBatch2: UInt32
    var bBatch0: UInt32
    var bBatch1: UInt32
    var bBatch2: UInt32
    var aOffset: UInt32
    var bOffset: UInt32
    var cOffset: UInt32
    var cRowStride: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "M", offset: 0, words: 1),
        VulkanPushMember(name: "N", offset: 4, words: 1),
        VulkanPushMember(name: "K", offset: 8, words: 1),
        VulkanPushMember(name: "a_row_stride", offset: 12, words: 1),
        VulkanPushMember(name: "a_col_stride", offset: 16, words: 1),
        VulkanPushMember(name: "b_row_stride", offset: 20, words: 1),
        VulkanPushMember(name: "b_col_stride", offset: 24, words: 1),
        VulkanPushMember(name: "batch1", offset: 28, words: 1),
        VulkanPushMember(name: "batch2", offset: 32, words: 1),
        VulkanPushMember(name: "a_batch0", offset: 36, words: 1),
        VulkanPushMember(name: "a_batch1", offset: 40, words: 1),
        VulkanPushMember(name: "a_batch2", offset: 44, words: 1),
        VulkanPushMember(name: "b_batch0", offset: 48, words: 1),
        VulkanPushMember(name: "b_batch1", offset: 52, words: 1),
        VulkanPushMember(name: "b_batch2", offset: 56, words: 1),
        VulkanPushMember(name: "a_offset", offset: 60, words: 1),
        VulkanPushMember(name: "b_offset", offset: 64, words: 1),
        VulkanPushMember(name: "c_offset", offset: 68, words: 1),
        VulkanPushMember(name: "c_row_stride", offset: 72, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.m),
         MemoryLayout<Self>.offset(of: \.n),
         MemoryLayout<Self>.offset(of: \.k),
         MemoryLayout<Self>.offset(of: \.aRowStride),
         MemoryLayout<Self>.offset(of: \.aColStride),
         MemoryLayout<Self>.offset(of: \.bRowStride),
         MemoryLayout<Self>.offset(of: \.bColStride),
         MemoryLayout<Self>.offset(of: \.batch1),
         MemoryLayout<Self>.offset(of: \.batch2),
         MemoryLayout<Self>.offset(of: \.aBatch0),
         MemoryLayout<Self>.offset(of: \.aBatch1),
         MemoryLayout<Self>.offset(of: \.aBatch2),
         MemoryLayout<Self>.offset(of: \.bBatch0),
         MemoryLayout<Self>.offset(of: \.bBatch1),
         MemoryLayout<Self>.offset(of: \.bBatch2),
         MemoryLayout<Self>.offset(of: \.aOffset),
         MemoryLayout<Self>.offset(of: \.bOffset),
         MemoryLayout<Self>.offset(of: \.cOffset),
         MemoryLayout<Self>.offset(of: \.cRowStride)]
    }
}

/// Push constants of dequantize.comp (`Parameters` there), laid out as their SPIR-V says.
struct DequantizeConstants: VulkanPushConstants {
    var count: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count)]
    }
}

/// Push constants of gather_block.comp (`Parameters` there), laid out as their SPIR-V says.
struct GatherBlockConstants: VulkanPushConstants {
    var count: UInt32
    var width: UInt32
    var idDtype: UInt32
    var rowStart: UInt32
    var rowCount: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "width", offset: 4, words: 1),
        VulkanPushMember(name: "id_dtype", offset: 8, words: 1),
        VulkanPushMember(name: "row_start", offset: 12, words: 1),
        VulkanPushMember(name: "row_count", offset: 16, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.width),
         MemoryLayout<Self>.offset(of: \.idDtype),
         MemoryLayout<Self>.offset(of: \.rowStart),
         MemoryLayout<Self>.offset(of: \.rowCount)]
    }
}

/// Push constants of conv2d.comp (`Parameters` there), laid out as their SPIR-V says.
struct Conv2dConstants: VulkanPushConstants {
    var channels: UInt32
    var height: UInt32
    var width: UInt32
    var outputs: UInt32
    var outHeight: UInt32
    var outWidth: UInt32
    var kh: UInt32
    var kw: UInt32
    var padding: UInt32
    var hasBias: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "channels", offset: 0, words: 1),
        VulkanPushMember(name: "height", offset: 4, words: 1),
        VulkanPushMember(name: "width", offset: 8, words: 1),
        VulkanPushMember(name: "outputs", offset: 12, words: 1),
        VulkanPushMember(name: "out_height", offset: 16, words: 1),
        VulkanPushMember(name: "out_width", offset: 20, words: 1),
        VulkanPushMember(name: "kh", offset: 24, words: 1),
        VulkanPushMember(name: "kw", offset: 28, words: 1),
        VulkanPushMember(name: "padding", offset: 32, words: 1),
        VulkanPushMember(name: "has_bias", offset: 36, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.channels),
         MemoryLayout<Self>.offset(of: \.height),
         MemoryLayout<Self>.offset(of: \.width),
         MemoryLayout<Self>.offset(of: \.outputs),
         MemoryLayout<Self>.offset(of: \.outHeight),
         MemoryLayout<Self>.offset(of: \.outWidth),
         MemoryLayout<Self>.offset(of: \.kh),
         MemoryLayout<Self>.offset(of: \.kw),
         MemoryLayout<Self>.offset(of: \.padding),
         MemoryLayout<Self>.offset(of: \.hasBias)]
    }
}

/// Push constants of lora_update.comp, lora_update_vec4.comp (`Parameters` there), laid out as their SPIR-V says.
struct LoraUpdateConstants: VulkanPushConstants {
    var rows: UInt32
    var n: UInt32
    var k: UInt32
    var rank: UInt32
    var rowsPerGroup: UInt32
    var scale: Float
    var xOffset: UInt32
    var yOffset: UInt32
    var outOffset: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "rows", offset: 0, words: 1),
        VulkanPushMember(name: "n", offset: 4, words: 1),
        VulkanPushMember(name: "k", offset: 8, words: 1),
        VulkanPushMember(name: "rank", offset: 12, words: 1),
        VulkanPushMember(name: "rows_per_group", offset: 16, words: 1),
        VulkanPushMember(name: "scale", offset: 20, words: 1),
        VulkanPushMember(name: "x_offset", offset: 24, words: 1),
        VulkanPushMember(name: "y_offset", offset: 28, words: 1),
        VulkanPushMember(name: "out_offset", offset: 32, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.rows),
         MemoryLayout<Self>.offset(of: \.n),
         MemoryLayout<Self>.offset(of: \.k),
         MemoryLayout<Self>.offset(of: \.rank),
         MemoryLayout<Self>.offset(of: \.rowsPerGroup),
         MemoryLayout<Self>.offset(of: \.scale),
         MemoryLayout<Self>.offset(of: \.xOffset),
         MemoryLayout<Self>.offset(of: \.yOffset),
         MemoryLayout<Self>.offset(of: \.outOffset)]
    }
}

/// Push constants of lora_gate.comp (`Parameters` there), laid out as their SPIR-V says.
struct LoraGateConstants: VulkanPushConstants {
    var rows: UInt32
    var width: UInt32
    var count: UInt32
    var epsilon: Float

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "rows", offset: 0, words: 1),
        VulkanPushMember(name: "width", offset: 4, words: 1),
        VulkanPushMember(name: "count", offset: 8, words: 1),
        VulkanPushMember(name: "epsilon", offset: 12, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.rows),
         MemoryLayout<Self>.offset(of: \.width),
         MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.epsilon)]
    }
}

/// Push constants of lora_gate_lowrank.comp (`Parameters` there), laid out as their SPIR-V says.
struct LoraGateLowrankConstants: VulkanPushConstants {
    var rows: UInt32
    var width: UInt32
    var count: UInt32
    var epsilon: Float
    var total: UInt32
    var offsets: VulkanWords9

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "rows", offset: 0, words: 1),
        VulkanPushMember(name: "width", offset: 4, words: 1),
        VulkanPushMember(name: "count", offset: 8, words: 1),
        VulkanPushMember(name: "epsilon", offset: 12, words: 1),
        VulkanPushMember(name: "total", offset: 16, words: 1),
        VulkanPushMember(name: "offsets", offset: 20, words: 9),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.rows),
         MemoryLayout<Self>.offset(of: \.width),
         MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.epsilon),
         MemoryLayout<Self>.offset(of: \.total),
         MemoryLayout<Self>.offset(of: \.offsets)]
    }
}

/// Push constants of attention.comp, attention_registers.comp (`Parameters` there), laid out as their SPIR-V says.
struct AttentionConstants: VulkanPushConstants {
    var queryLength: UInt32
    var keyLength: UInt32
    var heads: UInt32
    var scale: Float
    var causal: UInt32
    var hasMask: UInt32
    var maskBatchStride: UInt32
    var maskHeadStride: UInt32
    var queryBlocks: UInt32
    var kOffset: UInt32
    var vOffset: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "query_length", offset: 0, words: 1),
        VulkanPushMember(name: "key_length", offset: 4, words: 1),
        VulkanPushMember(name: "heads", offset: 8, words: 1),
        VulkanPushMember(name: "scale", offset: 12, words: 1),
        VulkanPushMember(name: "causal", offset: 16, words: 1),
        VulkanPushMember(name: "has_mask", offset: 20, words: 1),
        VulkanPushMember(name: "mask_batch_stride", offset: 24, words: 1),
        VulkanPushMember(name: "mask_head_stride", offset: 28, words: 1),
        VulkanPushMember(name: "query_blocks", offset: 32, words: 1),
        VulkanPushMember(name: "k_offset", offset: 36, words: 1),
        VulkanPushMember(name: "v_offset", offset: 40, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.queryLength),
         MemoryLayout<Self>.offset(of: \.keyLength),
         MemoryLayout<Self>.offset(of: \.heads),
         MemoryLayout<Self>.offset(of: \.scale),
         MemoryLayout<Self>.offset(of: \.causal),
         MemoryLayout<Self>.offset(of: \.hasMask),
         MemoryLayout<Self>.offset(of: \.maskBatchStride),
         MemoryLayout<Self>.offset(of: \.maskHeadStride),
         MemoryLayout<Self>.offset(of: \.queryBlocks),
         MemoryLayout<Self>.offset(of: \.kOffset),
         MemoryLayout<Self>.offset(of: \.vOffset)]
    }
}

/// Push constants of binary.comp (`Parameters` there), laid out as their SPIR-V says.
struct BinaryConstants: VulkanPushConstants {
    var count: UInt32
    var op: UInt32
    var dims: VulkanWords6
    var aStrides: VulkanWords6
    var bStrides: VulkanWords6

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "op", offset: 4, words: 1),
        VulkanPushMember(name: "dims", offset: 8, words: 6),
        VulkanPushMember(name: "a_strides", offset: 32, words: 6),
        VulkanPushMember(name: "b_strides", offset: 56, words: 6),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.op),
         MemoryLayout<Self>.offset(of: \.dims),
         MemoryLayout<Self>.offset(of: \.aStrides),
         MemoryLayout<Self>.offset(of: \.bStrides)]
    }
}

/// Push constants of unary.comp (`Parameters` there), laid out as their SPIR-V says.
struct UnaryConstants: VulkanPushConstants {
    var count: UInt32
    var function: UInt32
    var factor: Float

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "function", offset: 4, words: 1),
        VulkanPushMember(name: "factor", offset: 8, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.function),
         MemoryLayout<Self>.offset(of: \.factor)]
    }
}

/// Push constants of rowwise.comp (`Parameters` there), laid out as their SPIR-V says.
struct RowwiseConstants: VulkanPushConstants {
    var rows: UInt32
    var width: UInt32
    var mode: UInt32
    var hasWeight: UInt32
    var epsilon: Float

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "rows", offset: 0, words: 1),
        VulkanPushMember(name: "width", offset: 4, words: 1),
        VulkanPushMember(name: "mode", offset: 8, words: 1),
        VulkanPushMember(name: "has_weight", offset: 12, words: 1),
        VulkanPushMember(name: "epsilon", offset: 16, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.rows),
         MemoryLayout<Self>.offset(of: \.width),
         MemoryLayout<Self>.offset(of: \.mode),
         MemoryLayout<Self>.offset(of: \.hasWeight),
         MemoryLayout<Self>.offset(of: \.epsilon)]
    }
}

/// Push constants of rope.comp (`Parameters` there), laid out as their SPIR-V says.
struct RopeConstants: VulkanPushConstants {
    var pairs: UInt32
    var sequenceLength: UInt32
    var heads: UInt32
    var halfDim: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "pairs", offset: 0, words: 1),
        VulkanPushMember(name: "sequence_length", offset: 4, words: 1),
        VulkanPushMember(name: "heads", offset: 8, words: 1),
        VulkanPushMember(name: "half_dim", offset: 12, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.pairs),
         MemoryLayout<Self>.offset(of: \.sequenceLength),
         MemoryLayout<Self>.offset(of: \.heads),
         MemoryLayout<Self>.offset(of: \.halfDim)]
    }
}

/// Push constants of copy.comp (`Parameters` there), laid out as their SPIR-V says.
struct CopyConstants: VulkanPushConstants {
    var count: UInt32
    var inOffset: UInt32
    var outOffset: UInt32
    var dims: VulkanWords6
    var inStrides: VulkanWords6
    var outStrides: VulkanWords6

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "in_offset", offset: 4, words: 1),
        VulkanPushMember(name: "out_offset", offset: 8, words: 1),
        VulkanPushMember(name: "dims", offset: 12, words: 6),
        VulkanPushMember(name: "in_strides", offset: 36, words: 6),
        VulkanPushMember(name: "out_strides", offset: 60, words: 6),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.inOffset),
         MemoryLayout<Self>.offset(of: \.outOffset),
         MemoryLayout<Self>.offset(of: \.dims),
         MemoryLayout<Self>.offset(of: \.inStrides),
         MemoryLayout<Self>.offset(of: \.outStrides)]
    }
}

/// Push constants of convert.comp (`Parameters` there), laid out as their SPIR-V says.
struct ConvertConstants: VulkanPushConstants {
    var count: UInt32
    var mode: UInt32
    var inDtype: UInt32
    var idDtype: UInt32
    var width: UInt32
    var elements: UInt32
    var rowStart: UInt32
    var rowCount: UInt32
    var inOffset: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "mode", offset: 4, words: 1),
        VulkanPushMember(name: "in_dtype", offset: 8, words: 1),
        VulkanPushMember(name: "id_dtype", offset: 12, words: 1),
        VulkanPushMember(name: "width", offset: 16, words: 1),
        VulkanPushMember(name: "elements", offset: 20, words: 1),
        VulkanPushMember(name: "row_start", offset: 24, words: 1),
        VulkanPushMember(name: "row_count", offset: 28, words: 1),
        VulkanPushMember(name: "in_offset", offset: 32, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.mode),
         MemoryLayout<Self>.offset(of: \.inDtype),
         MemoryLayout<Self>.offset(of: \.idDtype),
         MemoryLayout<Self>.offset(of: \.width),
         MemoryLayout<Self>.offset(of: \.elements),
         MemoryLayout<Self>.offset(of: \.rowStart),
         MemoryLayout<Self>.offset(of: \.rowCount),
         MemoryLayout<Self>.offset(of: \.inOffset)]
    }
}

/// Push constants of topk_histogram.comp (`Parameters` there), laid out as their SPIR-V says.
struct TopkHistogramConstants: VulkanPushConstants {
    var count: UInt32
    var offset: UInt32
    var shift: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "offset", offset: 4, words: 1),
        VulkanPushMember(name: "shift", offset: 8, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.offset),
         MemoryLayout<Self>.offset(of: \.shift)]
    }
}

/// Push constants of topk_sum.comp (`Parameters` there), laid out as their SPIR-V says.
struct TopkSumConstants: VulkanPushConstants {
    var count: UInt32
    var offset: UInt32
    var partialOffset: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "count", offset: 0, words: 1),
        VulkanPushMember(name: "offset", offset: 4, words: 1),
        VulkanPushMember(name: "partial_offset", offset: 8, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.count),
         MemoryLayout<Self>.offset(of: \.offset),
         MemoryLayout<Self>.offset(of: \.partialOffset)]
    }
}

/// Push constants of topk_control.comp (`Parameters` there), laid out as their SPIR-V says.
struct TopkControlConstants: VulkanPushConstants {
    var mode: UInt32
    var k: UInt32
    var shift: UInt32
    var partialCount: UInt32

    static let spirvMembers: [VulkanPushMember] = [
        VulkanPushMember(name: "mode", offset: 0, words: 1),
        VulkanPushMember(name: "k", offset: 4, words: 1),
        VulkanPushMember(name: "shift", offset: 8, words: 1),
        VulkanPushMember(name: "partial_count", offset: 12, words: 1),
    ]
    static var swiftOffsets: [Int?] {
        [MemoryLayout<Self>.offset(of: \.mode),
         MemoryLayout<Self>.offset(of: \.k),
         MemoryLayout<Self>.offset(of: \.shift),
         MemoryLayout<Self>.offset(of: \.partialCount)]
    }
}
