// GGUF block dequantization with AVX-512 for the matmul's packing: each routine widens
// whole blocks into float32, with the same operations in the same order as the portable
// routines (Sources/LoRAFuse/IO/GGMLType.swift), so the values are bit for bit the ones the
// `gguf` package's `quants.dequantize` gives. Layouts as ggml-common.h declares them.
#include "LoRAFuseCPUKernels.h"
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,f16c")))

TARGET static inline float half_value(const uint8_t *p) {
    uint16_t bits;
    memcpy(&bits, p, 2);
    return _cvtsh_ss(bits);
}

// 16 bytes widened to 16 unsigned 32-bit lanes.
TARGET static inline __m512i bytes16(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
TARGET static inline __m512 to_float(__m512i v) { return _mm512_cvtepi32_ps(v); }
TARGET static inline void store(float *out, __m512 v) { _mm512_storeu_ps(out, v); }

// Lane i of (word >> (first + i)) & 1, shifted to bit `to`.
TARGET static inline __m512i bit_lanes(uint32_t word, int first, int to) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i shifted = _mm512_srlv_epi32(_mm512_set1_epi32((int)word), _mm512_add_epi32(lanes, _mm512_set1_epi32(first)));
    return _mm512_slli_epi32(_mm512_and_si512(shifted, _mm512_set1_epi32(1)), to);
}

TARGET static void q8_0(const uint8_t *b, float *out) {
    __m512 d = _mm512_set1_ps(half_value(b));
    for (int half = 0; half < 2; half++) {
        __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2 + 16 * half)));
        store(out + 16 * half, _mm512_mul_ps(to_float(q), d));
    }
}

// The two halves of a 32-value block: d·q + m where the type has a min (Q4_1, Q5_1), else
// d·(q − bias) (Q4_0: 8, Q5_0: 16); d and m are the block's first f16s.
TARGET static inline void store_halves(const uint8_t *b, float *out, int has_min, int bias, __m512i low, __m512i high) {
    __m512 d = _mm512_set1_ps(half_value(b));
    if (has_min) {
        __m512 m = _mm512_set1_ps(half_value(b + 2));
        store(out, _mm512_add_ps(_mm512_mul_ps(d, to_float(low)), m));
        store(out + 16, _mm512_add_ps(_mm512_mul_ps(d, to_float(high)), m));
    } else {
        __m512i offset = _mm512_set1_epi32(bias);
        store(out, _mm512_mul_ps(d, to_float(_mm512_sub_epi32(low, offset))));
        store(out + 16, _mm512_mul_ps(d, to_float(_mm512_sub_epi32(high, offset))));
    }
}

// Q4_0 and Q4_1: value j the low nibble of byte j, value j+16 the high.
TARGET static void q4(const uint8_t *b, float *out, int has_min) {
    __m512i v = bytes16(b + (has_min ? 4 : 2)), mask = _mm512_set1_epi32(15);
    store_halves(b, out, has_min, 8, _mm512_and_si512(v, mask), _mm512_srli_epi32(v, 4));
}

// Q5_0 and Q5_1: Q4's nibbles plus a fifth bit from the 32-bit qh (bit j for value j).
TARGET static void q5(const uint8_t *b, float *out, int has_min) {
    uint32_t qh;
    memcpy(&qh, b + (has_min ? 4 : 2), 4);
    __m512i v = bytes16(b + (has_min ? 8 : 6)), mask = _mm512_set1_epi32(15);
    store_halves(b, out, has_min, 16, _mm512_or_si512(_mm512_and_si512(v, mask), bit_lanes(qh, 0, 4)),
                 _mm512_or_si512(_mm512_srli_epi32(v, 4), bit_lanes(qh, 16, 4)));
}

// Q2_K: scales[16], qs[64], d, dmin; value e = 128h + 32s + l: (d·scale)·q − dmin·min.
TARGET static void q2_k(const uint8_t *b, float *out) {
    float d = half_value(b + 80), dmin = half_value(b + 82);
    for (int e0 = 0; e0 < 256; e0 += 16) {
        int h = e0 / 128, s = (e0 % 128) / 32, l0 = e0 % 32;
        uint8_t scale = b[e0 / 16];
        __m512 dl = _mm512_set1_ps(d * (float)(scale & 15)), ml = _mm512_set1_ps(dmin * (float)(scale >> 4));
        __m512i q = _mm512_and_si512(_mm512_srli_epi32(bytes16(b + 16 + h * 32 + l0), 2 * s), _mm512_set1_epi32(3));
        store(out + e0, _mm512_sub_ps(_mm512_mul_ps(dl, to_float(q)), ml));
    }
}

// Q3_K: hmask[32], qs[64], 16 six-bit scales in 12 bytes (offset 32), d.
TARGET static void q3_k(const uint8_t *b, float *out) {
    float d = half_value(b + 108);
    for (int e0 = 0; e0 < 256; e0 += 16) {
        int i = e0 / 16;
        int low6 = i < 8 ? (b[96 + i] & 15) : (b[96 + i - 8] >> 4);
        int high6 = (b[104 + i % 4] >> (2 * (i / 4))) & 3;
        __m512 dl = _mm512_set1_ps(d * (float)((low6 | high6 << 4) - 32));
        int h = e0 / 128, s = (e0 % 128) / 32, l0 = e0 % 32;
        __m512i low = _mm512_and_si512(_mm512_srli_epi32(bytes16(b + 32 + h * 32 + l0), 2 * s), _mm512_set1_epi32(3));
        __m512i high = _mm512_xor_si512(_mm512_and_si512(_mm512_srli_epi32(bytes16(b + l0), e0 / 32), _mm512_set1_epi32(1)),
                                        _mm512_set1_epi32(1));
        store(out + e0, _mm512_mul_ps(dl, to_float(_mm512_sub_epi32(low, _mm512_slli_epi32(high, 2)))));
    }
}

// Q4_K and Q5_K: d, dmin, 8 six-bit scales and mins in 12 bytes, [Q5_K: qh[32]], qs[128].
TARGET static void q45_k(const uint8_t *b, float *out, int fifth_bit) {
    float d = half_value(b), dmin = half_value(b + 2);
    const uint8_t *sc = b + 4, *qs = b + (fifth_bit ? 48 : 16), *qh = b + 16;
    for (int g = 0; g < 8; g++) {
        int j = g % 4, scale, minimum;
        if (g < 4) {
            scale = sc[g] & 63;
            minimum = sc[4 + g] & 63;
        } else {
            scale = (sc[8 + j] & 15) | ((sc[j] >> 2) & 0x30);
            minimum = (sc[8 + j] >> 4) | ((sc[4 + j] >> 2) & 0x30);
        }
        __m512 dd = _mm512_set1_ps(d * (float)scale), dm = _mm512_set1_ps(dmin * (float)minimum);
        for (int half = 0; half < 2; half++) {
            int l0 = 16 * half;
            __m512i q = _mm512_and_si512(_mm512_srli_epi32(bytes16(qs + (g / 2) * 32 + l0), 4 * (g % 2)), _mm512_set1_epi32(15));
            if (fifth_bit) {
                __m512i bit = _mm512_and_si512(_mm512_srli_epi32(bytes16(qh + l0), g), _mm512_set1_epi32(1));
                q = _mm512_or_si512(q, _mm512_slli_epi32(bit, 4));
            }
            store(out + g * 32 + l0, _mm512_sub_ps(_mm512_mul_ps(dd, to_float(q)), dm));
        }
    }
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d; value e = 128h + w: (d·scale)·(q − 32).
TARGET static void q6_k(const uint8_t *b, float *out) {
    float d = half_value(b + 208);
    for (int e0 = 0; e0 < 256; e0 += 16) {
        int h = e0 / 128, w0 = e0 % 128;
        __m512 dl = _mm512_set1_ps(d * (float)(int8_t)b[192 + e0 / 16]);
        __m512i low = _mm512_and_si512(_mm512_srli_epi32(bytes16(b + h * 64 + w0 % 64), 4 * (w0 / 64)), _mm512_set1_epi32(15));
        __m512i high = _mm512_and_si512(_mm512_srli_epi32(bytes16(b + 128 + h * 32 + w0 % 32), 2 * (w0 / 32)), _mm512_set1_epi32(3));
        __m512i q = _mm512_sub_epi32(_mm512_or_si512(low, _mm512_slli_epi32(high, 4)), _mm512_set1_epi32(32));
        store(out + e0, _mm512_mul_ps(dl, to_float(q)));
    }
}

int lf_dequantize_blocks_avx512(int type, const void *source, long blocks, float *out) {
    const uint8_t *b = (const uint8_t *)source;
    switch (type) {
    case 2: for (long i = 0; i < blocks; i++) q4(b + 18 * i, out + 32 * i, 0); return 1;
    case 3: for (long i = 0; i < blocks; i++) q4(b + 20 * i, out + 32 * i, 1); return 1;
    case 6: for (long i = 0; i < blocks; i++) q5(b + 22 * i, out + 32 * i, 0); return 1;
    case 7: for (long i = 0; i < blocks; i++) q5(b + 24 * i, out + 32 * i, 1); return 1;
    case 8: for (long i = 0; i < blocks; i++) q8_0(b + 34 * i, out + 32 * i); return 1;
    case 10: for (long i = 0; i < blocks; i++) q2_k(b + 84 * i, out + 256 * i); return 1;
    case 11: for (long i = 0; i < blocks; i++) q3_k(b + 110 * i, out + 256 * i); return 1;
    case 12: for (long i = 0; i < blocks; i++) q45_k(b + 144 * i, out + 256 * i, 0); return 1;
    case 13: for (long i = 0; i < blocks; i++) q45_k(b + 176 * i, out + 256 * i, 1); return 1;
    case 14: for (long i = 0; i < blocks; i++) q6_k(b + 210 * i, out + 256 * i); return 1;
    default: return 0;
    }
}
#else
int lf_dequantize_blocks_avx512(int type, const void *source, long blocks, float *out) {
    (void)type; (void)source; (void)blocks; (void)out;
    return 0;
}
#endif
