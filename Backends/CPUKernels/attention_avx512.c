#include "LoRAFuseCPUKernels.h"
#include <string.h>

// Attention for one strip of up to 14 query rows at a time (see LoRAFuseCPUKernels.h).
// K and V of a head are packed once into 32-wide panels; a strip's scores (14 × keys)
// stay in L1/L2 between the two products, so the L × L matrix is never written.

#define STRIP 14
#define PANEL 32

void lf_attention_pack_keys(const float *k, long stride, long keys, long depth, float *out) {
    const long panels = (keys + PANEL - 1) / PANEL;
    for (long panel = 0; panel < panels; ++panel) {
        float *block = out + panel * depth * PANEL;
        const long first = panel * PANEL;
        const long count = keys - first < PANEL ? keys - first : PANEL;
        for (long d = 0; d < depth; ++d) {
            float *line = block + d * PANEL;
            for (long j = 0; j < count; ++j) line[j] = k[(first + j) * stride + d];
            for (long j = count; j < PANEL; ++j) line[j] = 0;
        }
    }
}

void lf_attention_pack_values(const float *v, long stride, long keys, long depth, float *out) {
    const long padded_keys = (keys + PANEL - 1) / PANEL * PANEL;
    const long panels = (depth + PANEL - 1) / PANEL;
    for (long panel = 0; panel < panels; ++panel) {
        float *block = out + panel * padded_keys * PANEL;
        const long first = panel * PANEL;
        const long count = depth - first < PANEL ? depth - first : PANEL;
        for (long key = 0; key < padded_keys; ++key) {
            float *line = block + key * PANEL;
            if (key < keys) {
                memcpy(line, v + key * stride + first, (size_t)count * sizeof(float));
                for (long j = count; j < PANEL; ++j) line[j] = 0;
            } else {
                memset(line, 0, PANEL * sizeof(float));
            }
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

// Row-major a[rows × depth] (rows `lda` apart) → packed[depth × 14], rows past `rows` zero.
static void pack_strip(const float *a, long lda, long rows, long depth, float *packed) {
    for (long p = 0; p < depth; ++p) {
        float *line = packed + p * STRIP;
        for (long i = 0; i < rows; ++i) line[i] = a[i * lda + p];
        for (long i = rows; i < STRIP; ++i) line[i] = 0;
    }
}

// low/high[i] (14 rows × 32 columns in 28 zmm) = Σ_p packed[p·14 + i] · b[p·32 .. p·32+31].
__attribute__((target("avx512f")))
static inline void strip_product(const float *packed, const float *b, long depth, __m512 low[STRIP], __m512 high[STRIP]) {
    for (int i = 0; i < STRIP; i++) {
        low[i] = _mm512_setzero_ps();
        high[i] = _mm512_setzero_ps();
    }
    for (long p = 0; p < depth; p++) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
        for (int i = 0; i < STRIP; i++) {
            const __m512 broadcast = _mm512_set1_ps(packed[i]);
            low[i] = _mm512_fmadd_ps(broadcast, b0, low[i]);
            high[i] = _mm512_fmadd_ps(broadcast, b1, high[i]);
        }
        packed += STRIP;
        b += PANEL;
    }
}

// The same tile with A read in place: row i of the strip at a + i·lda (rows past `rows`
// repeat the last one). Saves transposing the probabilities, which cost more than the
// extra address arithmetic.
__attribute__((target("avx512f")))
static inline void strip_product_rows(const float *a, long lda, long rows, const float *b, long depth,
                                      __m512 low[STRIP], __m512 high[STRIP]) {
    const float *row[STRIP];
    for (int i = 0; i < STRIP; i++) row[i] = a + (i < rows ? i : rows - 1) * lda;
    for (int i = 0; i < STRIP; i++) {
        low[i] = _mm512_setzero_ps();
        high[i] = _mm512_setzero_ps();
    }
    for (long p = 0; p < depth; p++) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
        for (int i = 0; i < STRIP; i++) {
            const __m512 broadcast = _mm512_set1_ps(row[i][p]);
            low[i] = _mm512_fmadd_ps(broadcast, b0, low[i]);
            high[i] = _mm512_fmadd_ps(broadcast, b1, high[i]);
        }
        b += PANEL;
    }
}

__attribute__((target("avx512f")))
void lf_attention_scores_avx512(const float *q, long q_stride, long rows, long depth,
                                const float *packed_keys, long keys, float *scores, long scores_stride, float *workspace) {
    const long panels = (keys + PANEL - 1) / PANEL;
    __m512 low[STRIP], high[STRIP];
    pack_strip(q, q_stride, rows, depth, workspace);
    for (long panel = 0; panel < panels; ++panel) {
        strip_product(workspace, packed_keys + panel * depth * PANEL, depth, low, high);
        for (long i = 0; i < rows; i++) {
            float *line = scores + i * scores_stride + panel * PANEL;
            _mm512_storeu_ps(line, low[i]);
            _mm512_storeu_ps(line + 16, high[i]);
        }
    }
}

__attribute__((target("avx512f")))
void lf_attention_values_avx512(const float *probabilities, long p_stride, long rows, long keys,
                                const float *packed_values, long depth, const float *inverses,
                                float *out, long out_stride, float *workspace) {
    const long padded_keys = (keys + PANEL - 1) / PANEL * PANEL;
    const long panels = (depth + PANEL - 1) / PANEL;
    __m512 low[STRIP], high[STRIP];
    (void)workspace;
    for (long panel = 0; panel < panels; ++panel) {
        strip_product_rows(probabilities, p_stride, rows, packed_values + panel * padded_keys * PANEL, keys, low, high);
        const long count = depth - panel * PANEL < PANEL ? depth - panel * PANEL : PANEL;
        const __mmask16 low_mask = count >= 16 ? 0xFFFF : (__mmask16)((1u << count) - 1);
        const __mmask16 high_mask = count >= 32 ? 0xFFFF : count <= 16 ? 0 : (__mmask16)((1u << (count - 16)) - 1);
        for (long i = 0; i < rows; i++) {
            const __m512 inverse = _mm512_set1_ps(inverses[i]);
            float *line = out + i * out_stride + panel * PANEL;
            _mm512_mask_storeu_ps(line, low_mask, _mm512_mul_ps(low[i], inverse));
            _mm512_mask_storeu_ps(line + 16, high_mask, _mm512_mul_ps(high[i], inverse));
        }
    }
}
// exp(x) for 16 lanes: the Cephes reduction and polynomial of the Swift vectorExp
// (relative error < 2e-7 over [-87.3, 88.3]; inputs clamped to that range). MAXPS and
// MINPS return their second operand when either is NaN, so x goes second: a NaN stays NaN
// (IEEE propagation, as the GPU kernels and the float64 reference have it).
__attribute__((target("avx512f")))
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.3f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 polynomial = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(polynomial, n);
}

__attribute__((target("avx512f")))
float lf_softmax_row_avx512(const float *x, float *out, long width, float scale) {
    __m512 maxima = _mm512_set1_ps(-__builtin_inff());
    long j = 0;
    for (; j + 16 <= width; j += 16) maxima = _mm512_max_ps(maxima, _mm512_loadu_ps(x + j));
    if (j < width) {
        const __mmask16 tail = (__mmask16)((1u << (width - j)) - 1);
        maxima = _mm512_mask_max_ps(maxima, tail, maxima, _mm512_maskz_loadu_ps(tail, x + j));
    }
    const float maximum = _mm512_reduce_max_ps(maxima);
    if (maximum == -__builtin_inff()) {
        for (long i = 0; i < width; ++i) out[i] = __builtin_nanf("");
        return __builtin_nanf("");
    }
    const __m512 scale16 = _mm512_set1_ps(scale), shift = _mm512_set1_ps(scale * maximum);
    __m512 sums = _mm512_setzero_ps();
    for (j = 0; j + 16 <= width; j += 16) {
        const __m512 e = exp16(_mm512_fmsub_ps(_mm512_loadu_ps(x + j), scale16, shift));
        _mm512_storeu_ps(out + j, e);
        sums = _mm512_add_ps(sums, e);
    }
    if (j < width) {
        const __mmask16 tail = (__mmask16)((1u << (width - j)) - 1);
        const __m512 e = exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(tail, x + j), scale16, shift));
        _mm512_mask_storeu_ps(out + j, tail, e);
        sums = _mm512_mask_add_ps(sums, tail, sums, e);
    }
    return 1.0f / _mm512_reduce_add_ps(sums);
}
#else
float lf_softmax_row_avx512(const float *x, float *out, long width, float scale) {
    (void)x; (void)out; (void)width; (void)scale;
    return 0;
}
void lf_attention_scores_avx512(const float *q, long q_stride, long rows, long depth,
                                const float *packed_keys, long keys, float *scores, long scores_stride, float *workspace) {
    (void)q; (void)q_stride; (void)rows; (void)depth; (void)packed_keys; (void)keys; (void)scores; (void)scores_stride;
    (void)workspace;
}
void lf_attention_values_avx512(const float *probabilities, long p_stride, long rows, long keys,
                                const float *packed_values, long depth, const float *inverses,
                                float *out, long out_stride, float *workspace) {
    (void)probabilities; (void)p_stride; (void)rows; (void)keys; (void)packed_values; (void)depth; (void)inverses;
    (void)out; (void)out_stride; (void)workspace;
}
#endif
