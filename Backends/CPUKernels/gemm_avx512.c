#include "LoRAFuseCPUKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

int lf_cpu_supports_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

#define ROWS 14

__attribute__((target("avx512f")))
void lf_gemm_kernel_14x32_avx512(long depth, const float *a, const float *b, float *c, long ldc, int accumulate) {
    __m512 low[ROWS], high[ROWS];
    for (int i = 0; i < ROWS; i++) {
        low[i] = _mm512_setzero_ps();
        high[i] = _mm512_setzero_ps();
    }
    for (long p = 0; p < depth; p++) {
        __m512 b0 = _mm512_loadu_ps(b);
        __m512 b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
        for (int i = 0; i < ROWS; i++) {
            __m512 broadcast = _mm512_set1_ps(a[i]);
            low[i] = _mm512_fmadd_ps(broadcast, b0, low[i]);
            high[i] = _mm512_fmadd_ps(broadcast, b1, high[i]);
        }
        a += ROWS;
        b += 32;
    }
    for (int i = 0; i < ROWS; i++) {
        float *row = c + i * ldc;
        if (accumulate) {
            low[i] = _mm512_add_ps(low[i], _mm512_loadu_ps(row));
            high[i] = _mm512_add_ps(high[i], _mm512_loadu_ps(row + 16));
        }
        _mm512_storeu_ps(row, low[i]);
        _mm512_storeu_ps(row + 16, high[i]);
    }
}
#else
int lf_cpu_supports_avx512(void) { return 0; }
void lf_gemm_kernel_14x32_avx512(long depth, const float *a, const float *b, float *c, long ldc, int accumulate) {
    (void)depth; (void)a; (void)b; (void)c; (void)ldc; (void)accumulate;
}
#endif
