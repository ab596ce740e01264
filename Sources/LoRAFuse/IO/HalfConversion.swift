// Bit-exact conversions between float32 and the narrow float formats weights come in.
// Narrowing rounds to nearest, ties to even, as torch and numpy do; NaN stays NaN
// (quiet, sign kept) and widening is exact.

/// float16 bits → float32 (exact; subnormals, infinities and NaN payloads kept).
@inlinable @inline(__always)
public func halfBitsToFloat(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = UInt32(bits >> 10) & 0x1F
    let mantissa = UInt32(bits) & 0x3FF
    if exponent == 0x1F {
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent != 0 {
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
    // Zero or subnormal: mantissa · 2^-24, exact in float32.
    let magnitude = Float(mantissa) * 0x1p-24
    return Float(bitPattern: sign | magnitude.bitPattern)
}

/// float32 → float16 bits, round to nearest even; overflow gives infinity.
@inlinable
public func floatToHalfBits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exponent = Int((bits >> 23) & 0xFF)
    let mantissa = bits & 0x7F_FFFF
    if exponent == 0xFF {
        // Infinity, or NaN made quiet so a payload that lived only in the low bits survives.
        return mantissa == 0 ? sign | 0x7C00 : sign | 0x7E00 | UInt16(mantissa >> 13)
    }
    let halfExponent = exponent - 127 + 15
    if halfExponent >= 0x1F { return sign | 0x7C00 }
    if halfExponent <= 0 {
        // Result is subnormal (or zero): shift the full significand into place and round.
        if halfExponent < -10 { return sign }
        let significand = mantissa | 0x80_0000
        let shift = UInt32(14 - halfExponent)
        var result = significand >> shift
        let remainder = significand & ((1 << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if remainder > halfway || (remainder == halfway && (result & 1) == 1) { result += 1 }
        return sign | UInt16(result)
    }
    var result = UInt32(halfExponent) << 10 | (mantissa >> 13)
    let remainder = mantissa & 0x1FFF
    if remainder > 0x1000 || (remainder == 0x1000 && (result & 1) == 1) {
        result += 1  // may carry into the exponent, up to infinity: that is the correct rounding
    }
    return sign | UInt16(result)
}

/// bfloat16 bits → float32 (exact: bfloat16 is the top half of a float32).
@inlinable @inline(__always)
public func bfloat16BitsToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// float32 → bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
@inlinable @inline(__always)
public func floatToBFloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
    let roundingBias = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ roundingBias) >> 16)
}

/// float8 e4m3fn (no infinities; S.1111.111 is NaN; max 448) → float32.
@inlinable
public func float8E4M3BitsToFloat(_ bits: UInt8) -> Float {
    let negative = bits & 0x80 != 0
    let exponent = Int((bits >> 3) & 0xF)
    let mantissa = Float(bits & 0x7)
    let magnitude: Float
    if exponent == 0xF && bits & 0x7 == 0x7 {
        magnitude = .nan
    } else if exponent == 0 {
        magnitude = mantissa * 0x1p-9
    } else {
        magnitude = (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }
    return negative ? -magnitude : magnitude
}

/// float8 e5m2 (IEEE-like, the top byte of a float16) → float32.
@inlinable @inline(__always)
public func float8E5M2BitsToFloat(_ bits: UInt8) -> Float {
    halfBitsToFloat(UInt16(bits) << 8)
}

/// float32 → float8 e4m3fn, round to nearest even; out of range gives NaN (as torch's cast).
public func floatToFloat8E4M3Bits(_ value: Float) -> UInt8 {
    let sign: UInt8 = value.sign == .minus ? 0x80 : 0
    let magnitude = abs(value)
    if magnitude.isNaN || magnitude.isInfinite { return sign | 0x7F }
    // Quantise on the e4m3 grid: spacing 2^(e-3) for normal numbers, 2^-9 below 2^-6.
    let exponent = max(Int(magnitude.exponent), -6)
    let spacing = Float(sign: .plus, exponent: exponent - 3, significand: 1)
    let quantised = (magnitude / spacing).rounded(.toNearestOrEven) * spacing
    if quantised > 448 { return sign | 0x7F }
    if quantised == 0 { return sign }
    let quantisedExponent = Int(quantised.exponent)
    if quantisedExponent < -6 {
        return sign | UInt8(quantised / 0x1p-9)
    }
    let fraction = UInt8((quantised / Float(sign: .plus, exponent: quantisedExponent, significand: 1) - 1) * 8)
    return sign | UInt8(quantisedExponent + 7) << 3 | fraction
}

/// float32 → float8 e5m2, round to nearest even (through float16, which is exact here
/// only when done on the float32 value directly, so round once from float32).
public func floatToFloat8E5M2Bits(_ value: Float) -> UInt8 {
    if value.isNaN { return value.sign == .minus ? 0xFE : 0x7E }
    let sign: UInt8 = value.sign == .minus ? 0x80 : 0
    let magnitude = abs(value)
    if magnitude.isInfinite { return sign | 0x7C }
    let exponent = max(Int(magnitude.exponent), -14)
    let spacing = Float(sign: .plus, exponent: exponent - 2, significand: 1)
    let quantised = (magnitude / spacing).rounded(.toNearestOrEven) * spacing
    if quantised > 57344 { return sign | 0x7C }
    return sign | UInt8(floatToHalfBits(quantised) >> 8)
}
