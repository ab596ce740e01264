// Shared helpers for LoRAFuse compute shaders (GLSL 450, Vulkan 1.1).
#extension GL_EXT_control_flow_attributes : enable

// 1-D work is dispatched as a 2-D grid so counts past maxComputeWorkGroupCount[0] (65535)
// still fit: the host splits the group count into x ≤ 65535 and y.
uint flat_workgroup() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }
uint flat_invocation() { return flat_workgroup() * gl_WorkGroupSize.x + gl_LocalInvocationID.x; }

// Narrow floats are stored two to a 32-bit word (little-endian: element 0 in the low half).
float half_at(uint word, uint which) { return unpackHalf2x16(word)[which]; }
float bfloat_at(uint word, uint which) { return uintBitsToFloat(which == 0u ? (word << 16) : (word & 0xFFFF0000u)); }

// float8 formats, four to a word (element 0 in the lowest byte).
// e5m2 is the top byte of a float16; e4m3fn (no infinities, S.1111.111 = NaN) is rebuilt
// from its fields: normals (1 + m/8)·2^(e−7), subnormals m·2^−9.
float fp8e5m2_from_byte(uint byte_value) { return unpackHalf2x16(byte_value << 8).x; }
float fp8e4m3_from_byte(uint byte_value) {
    uint sign = (byte_value & 0x80u) << 24;
    uint exponent = (byte_value >> 3) & 0xFu;
    uint mantissa = byte_value & 0x7u;
    if (exponent == 0xFu && mantissa == 0x7u) return uintBitsToFloat(sign | 0x7FC00000u);
    if (exponent == 0u) return uintBitsToFloat(sign) + (sign != 0u ? -1.0 : 1.0) * float(mantissa) * (1.0 / 512.0);
    return uintBitsToFloat(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}
float fp8e4m3_at(uint word, uint which) { return fp8e4m3_from_byte((word >> (8u * which)) & 0xFFu); }
float fp8e5m2_at(uint word, uint which) { return fp8e5m2_from_byte((word >> (8u * which)) & 0xFFu); }
vec4 fp8e4m3_word(uint word) {
    return vec4(fp8e4m3_from_byte(word & 0xFFu), fp8e4m3_from_byte((word >> 8) & 0xFFu),
                fp8e4m3_from_byte((word >> 16) & 0xFFu), fp8e4m3_from_byte(word >> 24));
}
vec4 fp8e5m2_word(uint word) {
    return vec4(unpackHalf2x16((word & 0xFFu) << 8).x, unpackHalf2x16(word & 0xFF00u).x,
                unpackHalf2x16((word >> 8) & 0xFF00u).x, unpackHalf2x16((word >> 16) & 0xFF00u).x);
}
// 4 bfloat16 packed in two words, low half first.
vec4 bfloat_words(uvec2 w) { return uintBitsToFloat(uvec4(w.x << 16, w.x & 0xFFFF0000u, w.y << 16, w.y & 0xFFFF0000u)); }

// float32 → bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
uint bfloat_bits(float value) {
    uint bits = floatBitsToUint(value);
    if (isnan(value)) return (bits >> 16) | 0x40u;
    return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
}

// Op codes and dtype codes shared with the host (DTYPE_*, UNARY_*, ...): generated from
// Shaders/kernels.json, the same table the Swift enums come from.
#include "kernel_codes.glsl"

// float32 → float16 bits, round to nearest even (packHalf2x16's rounding is left to the
// implementation, so casts use this exact version).
uint half_bits(float value) {
    uint bits = floatBitsToUint(value);
    uint sign = (bits >> 16) & 0x8000u;
    int exponent = int((bits >> 23) & 0xFFu);
    uint mantissa = bits & 0x7FFFFFu;
    if (exponent == 0xFF) return mantissa == 0u ? (sign | 0x7C00u) : (sign | 0x7E00u | (mantissa >> 13));
    int half_exponent = exponent - 112;
    if (half_exponent >= 0x1F) return sign | 0x7C00u;
    if (half_exponent <= 0) {
        if (half_exponent < -10) return sign;
        uint significand = mantissa | 0x800000u;
        uint shift = uint(14 - half_exponent);
        uint result = significand >> shift;
        uint remainder = significand & ((1u << shift) - 1u);
        uint halfway = 1u << (shift - 1u);
        if (remainder > halfway || (remainder == halfway && (result & 1u) == 1u)) result += 1u;
        return sign | result;
    }
    uint result = (uint(half_exponent) << 10) | (mantissa >> 13);
    uint remainder = mantissa & 0x1FFFu;
    if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u) == 1u)) result += 1u;
    return sign | result;
}
