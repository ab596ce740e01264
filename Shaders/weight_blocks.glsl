// GGUF block-quantized weights for matmul.comp (define one of B_Q4_0, B_Q4_1, B_Q5_0,
// B_Q5_1, B_Q8_0, B_Q2_K, B_Q3_K, B_Q4_K, B_Q5_K, B_Q6_K), at binding WEIGHT_BINDING as the
// file stores them: blocks of QK values in BLOCK_BYTES bytes, back to back along each row
// of the [N, K] weight (K a whole number of blocks). `load_b(i)` dequantizes element i
// (row-major index into the weight) in registers: it reads the block's scales and the
// element's bits, never a dequantized copy. Layouts as ggml-common.h declares them; the
// host's bit-exact reference is Sources/LoRAFuse/IO/GGMLType.swift.
layout(std430, binding = WEIGHT_BINDING) readonly buffer BBuffer { uint b_words[]; };

// Byte, 16-bit and (2-aligned) 32-bit reads at a byte offset. Every block is an even number
// of bytes and its f16/u32 fields sit at even offsets, so a 16-bit read never straddles words.
uint b_byte(uint offset) { return (b_words[offset >> 2] >> (8u * (offset & 3u))) & 0xFFu; }
uint b_u16(uint offset) { return (b_words[offset >> 2] >> (8u * (offset & 2u))) & 0xFFFFu; }
uint b_u32(uint offset) { return b_u16(offset) | (b_u16(offset + 2u) << 16); }
float b_half(uint offset) { return unpackHalf2x16(b_u16(offset)).x; }
int b_int8(uint offset) { return int(b_byte(offset) << 24) >> 24; }

#if defined(B_Q4_0) || defined(B_Q4_1) || defined(B_Q5_0) || defined(B_Q5_1) || defined(B_Q8_0)
const uint QK = 32u;
#else
const uint QK = 256u;
#endif

#if defined(B_Q4_0)
const uint BLOCK_BYTES = 18u;
// d (f16), 16 bytes of nibbles: value j the low nibble of byte j, value j+16 the high; d·(q − 8).
float dequantize(uint bb, uint e) {
    uint q = (b_byte(bb + 2u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u;
    return b_half(bb) * (float(q) - 8.0);
}
#elif defined(B_Q4_1)
const uint BLOCK_BYTES = 20u;
// d, m (f16), 16 bytes of nibbles; d·q + m.
float dequantize(uint bb, uint e) {
    uint q = (b_byte(bb + 4u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u;
    return b_half(bb) * float(q) + b_half(bb + 2u);
}
#elif defined(B_Q5_0)
const uint BLOCK_BYTES = 22u;
// d (f16), 32 fifth bits (u32), 16 bytes of low nibbles; d·(q − 16).
float dequantize(uint bb, uint e) {
    uint q = ((b_byte(bb + 6u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u) | (((b_u32(bb + 2u) >> e) & 1u) << 4);
    return b_half(bb) * (float(q) - 16.0);
}
#elif defined(B_Q5_1)
const uint BLOCK_BYTES = 24u;
// d, m (f16), 32 fifth bits, 16 bytes of low nibbles; d·q + m.
float dequantize(uint bb, uint e) {
    uint q = ((b_byte(bb + 8u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u) | (((b_u32(bb + 4u) >> e) & 1u) << 4);
    return b_half(bb) * float(q) + b_half(bb + 2u);
}
#elif defined(B_Q8_0)
const uint BLOCK_BYTES = 34u;
// d (f16), 32 signed bytes; q·d.
float dequantize(uint bb, uint e) { return float(b_int8(bb + 2u + e)) * b_half(bb); }
#elif defined(B_Q2_K)
const uint BLOCK_BYTES = 84u;
// scales[16] (4-bit scale, 4-bit min per 16 values), qs[64] (2 bits), d, dmin (f16);
// value e = 128h + 32s + l: (d·scale)·q − dmin·min, q = bits 2s of byte 32h + l.
#elif defined(B_Q3_K)
const uint BLOCK_BYTES = 110u;
// hmask[32], qs[64] (low 2 bits), scales[12] (16 six-bit scales, offset 32), d (f16);
// value e: (d·scale)·(q − 4·(1 − high bit)).
#elif defined(B_Q4_K) || defined(B_Q5_K)
#if defined(B_Q4_K)
const uint BLOCK_BYTES = 144u;
const uint QS = 16u;
#else
const uint BLOCK_BYTES = 176u;
const uint QS = 48u;
#endif
// d, dmin (f16), scales[12] (8 six-bit scales and mins), [Q5_K: qh[32]], qs[128]; 8 groups
// of 32: (d·scale)·q − dmin·min, group 2c + s taking nibble s of bytes 32c…32c+31 of qs.
#elif defined(B_Q6_K)
const uint BLOCK_BYTES = 210u;
// ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d (f16);
// value e: (d·scale of e/16)·(q − 32).
float dequantize(uint bb, uint e) {
    uint h = e >> 7, w = e & 127u;
    uint low = (b_byte(bb + h * 64u + (w & 63u)) >> (4u * (w >> 6))) & 15u;
    uint high = (b_byte(bb + 128u + h * 32u + (w & 31u)) >> (2u * (w >> 5))) & 3u;
    int q = int(low | (high << 4)) - 32;
    return (b_half(bb + 208u) * float(b_int8(bb + 192u + (e >> 4)))) * float(q);
}
#endif

#if defined(B_Q2_K) || defined(B_Q3_K) || defined(B_Q4_K) || defined(B_Q5_K)
void group_scale(uint bb, uint e, out float scale, out float offset);
float group_quant(uint bb, uint e);
// (d·scale)·q − dmin·min as the host computes it (offset = −dmin·min; Q3_K's is 0).
float dequantize(uint bb, uint e) {
    float scale, offset;
    group_scale(bb, e, scale, offset);
#if defined(B_Q3_K)
    return scale * group_quant(bb, e);  // no "+ 0.0": a −0 product stays −0, as on the host
#else
    return scale * group_quant(bb, e) + offset;
#endif
}
#endif

float load_b(uint index) { return dequantize((index / QK) * BLOCK_BYTES, index % QK); }

// The same values split for kernels that walk 16 consecutive elements of a row: every type's
// scales are constant over such a run (e a multiple of 16), so `group_scale` decodes them
// once as value = scale·q + offset, and `group_quant` reads only the element's bits.
void group_scale(uint bb, uint e, out float scale, out float offset) {
#if defined(B_Q4_0)
    scale = b_half(bb); offset = -8.0 * scale;
#elif defined(B_Q5_0)
    scale = b_half(bb); offset = -16.0 * scale;
#elif defined(B_Q4_1) || defined(B_Q5_1)
    scale = b_half(bb); offset = b_half(bb + 2u);
#elif defined(B_Q8_0)
    scale = b_half(bb); offset = 0.0;
#elif defined(B_Q2_K)
    uint packed = b_byte(bb + (e >> 4));
    scale = b_half(bb + 80u) * float(packed & 15u); offset = -b_half(bb + 82u) * float(packed >> 4);
#elif defined(B_Q3_K)
    uint i = e >> 4;
    uint low6 = i < 8u ? (b_byte(bb + 96u + i) & 15u) : (b_byte(bb + 88u + i) >> 4);
    uint high6 = (b_byte(bb + 104u + (i & 3u)) >> (2u * (i >> 2))) & 3u;
    scale = b_half(bb + 108u) * float(int(low6 | (high6 << 4)) - 32); offset = 0.0;
#elif defined(B_Q4_K) || defined(B_Q5_K)
    uint g = e >> 5, j = g & 3u, sc, mn;
    if (g < 4u) {
        sc = b_byte(bb + 4u + g) & 63u;
        mn = b_byte(bb + 8u + g) & 63u;
    } else {
        uint packed = b_byte(bb + 12u + j);
        sc = (packed & 15u) | ((b_byte(bb + 4u + j) >> 2) & 0x30u);
        mn = (packed >> 4) | ((b_byte(bb + 8u + j) >> 2) & 0x30u);
    }
    scale = b_half(bb) * float(sc); offset = -b_half(bb + 2u) * float(mn);
#elif defined(B_Q6_K)
    scale = b_half(bb + 208u) * float(b_int8(bb + 192u + (e >> 4))); offset = -32.0 * scale;
#endif
}

float group_quant(uint bb, uint e) {
#if defined(B_Q4_0)
    return float((b_byte(bb + 2u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u);
#elif defined(B_Q4_1)
    return float((b_byte(bb + 4u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u);
#elif defined(B_Q5_0)
    return float(((b_byte(bb + 6u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u) | (((b_u32(bb + 2u) >> e) & 1u) << 4));
#elif defined(B_Q5_1)
    return float(((b_byte(bb + 8u + (e & 15u)) >> (e < 16u ? 0u : 4u)) & 15u) | (((b_u32(bb + 4u) >> e) & 1u) << 4));
#elif defined(B_Q8_0)
    return float(b_int8(bb + 2u + e));
#elif defined(B_Q2_K)
    return float((b_byte(bb + 16u + (e >> 7) * 32u + (e & 31u)) >> (2u * ((e >> 5) & 3u))) & 3u);
#elif defined(B_Q3_K)
    uint h = e >> 7, s = (e >> 5) & 3u, l = e & 31u;
    int low = int((b_byte(bb + 32u + h * 32u + l) >> (2u * s)) & 3u);
    int high = int(((b_byte(bb + l) >> (e >> 5)) & 1u) ^ 1u);
    return float(low - (high << 2));
#elif defined(B_Q4_K) || defined(B_Q5_K)
    uint g = e >> 5, l = e & 31u;
    uint q = (b_byte(bb + QS + (g >> 1) * 32u + l) >> (4u * (g & 1u))) & 15u;
#if defined(B_Q5_K)
    q |= ((b_byte(bb + 16u + l) >> g) & 1u) << 4;
#endif
    return float(q);
#elif defined(B_Q6_K)
    uint h = e >> 7, w = e & 127u;
    uint low = (b_byte(bb + h * 64u + (w & 63u)) >> (4u * (w >> 6))) & 15u;
    uint high = (b_byte(bb + 128u + h * 32u + (w & 31u)) >> (2u * (w >> 5))) & 3u;
    return float(low | (high << 4));
#endif
}
