/// The element types of GGUF tensors (ggml's `ggml_type` numbers): plain floats and the
/// block-quantized formats, each a block of `blockElements` values in `blockBytes` bytes.
/// The ones LoRAFuse reads have a `dequantize` here, written from ggml's block layouts and
/// checked bit for bit against the `gguf` Python package's `quants.dequantize`.
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14
    case bf16 = 30

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        }
    }

    /// ggml's name for a type number LoRAFuse does not read, for the error that says so.
    public static func name(of raw: UInt32) -> String {
        if let known = GGMLType(rawValue: raw) { return known.description }
        let others: [UInt32: String] = [4: "Q4_2", 5: "Q4_3", 9: "Q8_1", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
                                        19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
                                        26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"]
        return others[raw] ?? "type \(raw)"
    }

    /// Values per block (1 for the plain types; 32 for Q4_0…Q8_0; 256 for the K-quants).
    public var blockElements: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: 256
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        case .q2_K: 84
        case .q3_K: 110
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        }
    }

    /// Byte offsets of a block's f16 scales (d, and m or dmin where the type has one).
    public var scaleOffsets: [Int] {
        switch self {
        case .f32, .f16, .bf16: []
        case .q4_0, .q5_0, .q8_0: [0]
        case .q4_1, .q5_1, .q4_K, .q5_K: [0, 2]
        case .q2_K: [80, 82]
        case .q3_K: [108]
        case .q6_K: [208]
        }
    }

    /// Bytes of `elements` values (a whole number of blocks), or nil when `elements` is
    /// not a multiple of the block or the size overflows.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockElements == 0 else { return nil }
        let (bytes, overflow) = (elements / blockElements).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }

    /// Widens `count` values stored at `source` into `destination` (float32), block by block.
    /// `count` must be a multiple of `blockElements` and `source` hold `byteCount(elements:)` bytes.
    public func dequantize(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        let blocks = count / blockElements
        for block in 0..<blocks {
            let bytes = source + block * blockBytes
            let out = destination + block * blockElements
            switch self {
            case .f32: out.pointee = bytes.loadUnaligned(as: Float.self)
            case .f16: out.pointee = halfBitsToFloat(bytes.loadUnaligned(as: UInt16.self))
            case .bf16: out.pointee = bfloat16BitsToFloat(bytes.loadUnaligned(as: UInt16.self))
            case .q4_0: Self.q4_0(bytes, out)
            case .q4_1: Self.q4_1(bytes, out)
            case .q5_0: Self.q5_0(bytes, out)
            case .q5_1: Self.q5_1(bytes, out)
            case .q8_0: Self.q8_0(bytes, out)
            case .q2_K: Self.q2_K(bytes, out)
            case .q3_K: Self.q3_K(bytes, out)
            case .q4_K: Self.q4_5_K(bytes, out, fifthBit: false)
            case .q5_K: Self.q4_5_K(bytes, out, fifthBit: true)
            case .q6_K: Self.q6_K(bytes, out)
            }
        }
    }

    // MARK: - Blocks (layouts as ggml-common.h declares them)

    @inline(__always) static func half(_ bytes: UnsafeRawPointer, _ offset: Int) -> Float {
        halfBitsToFloat(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always) static func byte(_ bytes: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        bytes.load(fromByteOffset: offset, as: UInt8.self)
    }

    /// d (f16), 16 bytes of nibbles: value j is the low nibble of byte j, value j+16 the high; d·(q − 8).
    static func q4_0(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<16 {
            let q = byte(b, 2 + j)
            out[j] = d * Float(Int(q & 0x0F) - 8)
            out[j + 16] = d * Float(Int(q >> 4) - 8)
        }
    }

    /// d, m (f16), 16 bytes of nibbles; d·q + m.
    static func q4_1(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        for j in 0..<16 {
            let q = byte(b, 4 + j)
            out[j] = d * Float(q & 0x0F) + m
            out[j + 16] = d * Float(q >> 4) + m
        }
    }

    /// d (f16), 32 high bits (u32), 16 bytes of low nibbles; d·(q − 16).
    static func q5_0(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        let high = b.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
        for j in 0..<16 {
            let q = byte(b, 6 + j)
            let low = Int(q & 0x0F) | Int((high >> UInt32(j)) & 1) << 4
            let upper = Int(q >> 4) | Int((high >> UInt32(j + 16)) & 1) << 4
            out[j] = d * Float(low - 16)
            out[j + 16] = d * Float(upper - 16)
        }
    }

    /// d, m (f16), 32 high bits, 16 bytes of low nibbles; d·q + m.
    static func q5_1(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        let high = b.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        for j in 0..<16 {
            let q = byte(b, 8 + j)
            let low = UInt32(q & 0x0F) | ((high >> UInt32(j)) & 1) << 4
            let upper = UInt32(q >> 4) | ((high >> UInt32(j + 16)) & 1) << 4
            out[j] = d * Float(low) + m
            out[j + 16] = d * Float(upper) + m
        }
    }

    /// d (f16), 32 signed bytes; q·d.
    static func q8_0(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<32 { out[j] = Float(Int8(bitPattern: byte(b, 2 + j))) * d }
    }

    /// scales[16] (4-bit scale, 4-bit min per 16 values), qs[64] (2-bit), d, dmin (f16);
    /// value e: (d·scale)·q − dmin·min of group e/16, q = bits 2s of byte 32h + l (e = 128h + 32s + l).
    static func q2_K(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 80), dmin = half(b, 82)
        for e in 0..<256 {
            let (h, s, l) = (e / 128, (e % 128) / 32, e % 32)
            let q = Float((byte(b, 16 + h * 32 + l) >> UInt8(2 * s)) & 3)
            let scale = byte(b, e / 16)
            let dl = d * Float(scale & 0x0F), ml = dmin * Float(scale >> 4)
            out[e] = dl * q - ml
        }
    }

    /// hmask[32], qs[64] (low 2 bits), scales[12] (16 packed 6-bit scales, offset 32), d (f16);
    /// value e: (d·scale)·(q − 4·(1 − high bit)).
    static func q3_K(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 108)
        var scales = [Float](repeating: 0, count: 16)
        for i in 0..<16 {
            let low = i < 8 ? byte(b, 96 + i) & 0x0F : byte(b, 96 + i - 8) >> 4
            let high = (byte(b, 104 + i % 4) >> UInt8(2 * (i / 4))) & 3
            scales[i] = Float(Int(low | high << 4) - 32)
        }
        for e in 0..<256 {
            let (h, s, l) = (e / 128, (e % 128) / 32, e % 32)
            let low = Int((byte(b, 32 + h * 32 + l) >> UInt8(2 * s)) & 3)
            let high = Int(((byte(b, l) >> UInt8(e / 32)) & 1) ^ 1)
            let dl = d * scales[e / 16]
            out[e] = dl * Float(low - (high << 2))
        }
    }

    /// The 8 six-bit scales and mins of a Q4_K/Q5_K block's 12 scale bytes at `offset`.
    static func scalesAndMins(_ b: UnsafeRawPointer, _ offset: Int) -> (scales: [UInt8], mins: [UInt8]) {
        var scales = [UInt8](repeating: 0, count: 8), mins = [UInt8](repeating: 0, count: 8)
        for j in 0..<4 {
            scales[j] = byte(b, offset + j) & 0x3F
            mins[j] = byte(b, offset + 4 + j) & 0x3F
            scales[j + 4] = (byte(b, offset + 8 + j) & 0x0F) | ((byte(b, offset + j) >> 2) & 0x30)
            mins[j + 4] = (byte(b, offset + 8 + j) >> 4) | ((byte(b, offset + 4 + j) >> 2) & 0x30)
        }
        return (scales, mins)
    }

    /// Q4_K: d, dmin (f16), scales[12], qs[128]; Q5_K adds qh[32] before qs (bit g of byte l
    /// is value 32g + l's fifth bit). 8 groups of 32: (d·scale)·q − dmin·min, group 2c + s
    /// taking nibble s of bytes 32c…32c+31 of qs.
    static func q4_5_K(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, fifthBit: Bool) {
        let d = half(b, 0), dmin = half(b, 2)
        let (scales, mins) = scalesAndMins(b, 4)
        let qs = fifthBit ? 48 : 16
        for g in 0..<8 {
            let dd = d * Float(scales[g]), dm = dmin * Float(mins[g])
            let (c, s) = (g / 2, g % 2)
            for l in 0..<32 {
                let low = (byte(b, qs + c * 32 + l) >> UInt8(4 * s)) & 0x0F
                let high = fifthBit ? (byte(b, 16 + l) >> UInt8(g)) & 1 : 0
                out[g * 32 + l] = dd * Float(low | high << 4) - dm
            }
        }
    }

    /// ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d (f16);
    /// value e: (d·scale of e/16)·(q − 32).
    static func q6_K(_ b: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(b, 208)
        for e in 0..<256 {
            let h = e / 128, within = e % 128
            let low = (byte(b, h * 64 + within % 64) >> UInt8(4 * (within / 64))) & 0x0F
            let high = (byte(b, 128 + h * 32 + within % 32) >> UInt8(2 * (within / 32))) & 3
            let q = Int(low | high << 4) - 32
            let dl = d * Float(Int8(bitPattern: byte(b, 192 + e / 16)))
            out[e] = dl * Float(q)
        }
    }
}
