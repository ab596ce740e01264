#version 450
// Conversions: embedding gathers (table rows of F32/F16/BF16/F8 picked by I32/I64 ids) and
// casts from F32, F16, BF16, F8 and integer ids to F32, F16, BF16. Narrowing writes one 32-bit word (two
// elements) per invocation so no two invocations share a word.
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer InBuffer { uint in_words[]; };
layout(std430, binding = 1) readonly buffer IdBuffer { uint id_words[]; };
layout(std430, binding = 2) writeonly buffer OutBuffer { uint out_words[]; };

layout(push_constant) uniform Parameters {
    uint count;        // output elements (widening, gather) or output words (narrowing)
    uint mode;         // CONVERT_*: gather, widen to F32, narrow F32 → F16 or BF16
    uint in_dtype;     // DTYPE_* of the source (table or cast input)
    uint id_dtype;     // DTYPE_I32 or DTYPE_I64
    uint width;        // gather: row width
    uint elements;     // narrowing: element count (the last word may hold one)
    uint row_start;    // gather: the bound table window holds rows row_start ..< row_start + row_count,
    uint row_count;    //   starting at element in_offset of the window (tables past the binding limit
    uint in_offset;    //   are gathered one window at a time; other ids are left to other windows)
} p;

float load_element(uint index) {
    switch (p.in_dtype) {
        case DTYPE_F32: return uintBitsToFloat(in_words[index]);
        case DTYPE_F16: return half_at(in_words[index >> 1], index & 1u);
        case DTYPE_BF16: return bfloat_at(in_words[index >> 1], index & 1u);
        case DTYPE_F8E4M3: return fp8e4m3_at(in_words[index >> 2], index & 3u);
        case DTYPE_F8E5M2: return fp8e5m2_at(in_words[index >> 2], index & 3u);
        case DTYPE_I32: return float(int(in_words[index]));
        default: {
            // I64 as two words; the value is widened from the low word and the sign of the high one.
            uint low = in_words[2 * index], high = in_words[2 * index + 1];
            return float(int(high)) * 4294967296.0 + float(low);
        }
    }
}

void main() {
    uint index = flat_invocation();
    if (index >= p.count) return;
    if (p.mode == CONVERT_GATHER) {
        uint token = index / p.width, column = index % p.width;
        uint id = p.id_dtype == DTYPE_I64 ? id_words[2 * token] : id_words[token];
        if (id < p.row_start || id - p.row_start >= p.row_count) return;
        out_words[index] = floatBitsToUint(load_element(p.in_offset + (id - p.row_start) * p.width + column));
    } else if (p.mode == CONVERT_WIDEN) {
        out_words[index] = floatBitsToUint(load_element(index));
    } else {
        uint first = 2 * index;
        float x = load_element(first);
        float y = first + 1 < p.elements ? load_element(first + 1) : 0.0;
        out_words[index] = p.mode == CONVERT_NARROW_F16 ? (half_bits(x) | (half_bits(y) << 16)) : (bfloat_bits(x) | (bfloat_bits(y) << 16));
    }
}
