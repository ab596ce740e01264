#include "LoRAFuseCPUKernels.h"
#include <math.h>

// |ΔW| rows for K-LoRA's plan (see LoRAFuseCPUKernels.h): four rows × 16 columns of
// ΔW = up · down accumulate in registers over the rank, so ΔW costs rank FMAs per entry and
// is written once, as magnitudes, into a small cache-resident buffer.

static float lowrank_abs_rows_generic(const float *up, long rows, long rank, const float *down, long stride, long columns,
                                      float *out, double *sum) {
    float maximum = 0;
    double total = 0;
    for (long row = 0; row < rows; ++row) {
        float *line = out + row * columns;
        for (long column = 0; column < columns; ++column) line[column] = 0;
        for (long j = 0; j < rank; ++j) {
            const float u = up[row * rank + j];
            const float *d = down + j * stride;
            for (long column = 0; column < columns; ++column) line[column] += u * d[column];
        }
        float row_sum = 0;
        for (long column = 0; column < columns; ++column) {
            const float magnitude = fabsf(line[column]);
            line[column] = magnitude;
            row_sum += magnitude;
            if (magnitude > maximum) maximum = magnitude;
        }
        total += row_sum;
    }
    *sum += total;
    return maximum;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static float horizontal_max(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma")))
static double horizontal_sum(__m256 v) {
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    double total = 0;
    for (int i = 0; i < 8; ++i) total += lanes[i];
    return total;
}

__attribute__((target("avx2,fma")))
static float lowrank_abs_rows_avx2(const float *up, long rows, long rank, const float *down, long stride, long columns,
                                   float *out, double *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const long r1 = rows > 1 ? 1 : 0, r2 = rows > 2 ? 2 : rows - 1, r3 = rows > 3 ? 3 : rows - 1;
    const float *u0 = up, *u1 = up + r1 * rank, *u2 = up + r2 * rank, *u3 = up + r3 * rank;
    __m256 maximum = _mm256_setzero_ps(), sums[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float tail_max = 0;
    double tail_sum = 0;
    for (long column = 0; column < stride; column += 16) {
        __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
        __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps(), a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
        const float *d = down + column;
        for (long j = 0; j < rank; ++j, d += stride) {
            const __m256 d0 = _mm256_loadu_ps(d), d1 = _mm256_loadu_ps(d + 8);
            __m256 u = _mm256_broadcast_ss(u0 + j);
            a00 = _mm256_fmadd_ps(u, d0, a00); a01 = _mm256_fmadd_ps(u, d1, a01);
            u = _mm256_broadcast_ss(u1 + j);
            a10 = _mm256_fmadd_ps(u, d0, a10); a11 = _mm256_fmadd_ps(u, d1, a11);
            u = _mm256_broadcast_ss(u2 + j);
            a20 = _mm256_fmadd_ps(u, d0, a20); a21 = _mm256_fmadd_ps(u, d1, a21);
            u = _mm256_broadcast_ss(u3 + j);
            a30 = _mm256_fmadd_ps(u, d0, a30); a31 = _mm256_fmadd_ps(u, d1, a31);
        }
        __m256 results[8] = {a00, a01, a10, a11, a20, a21, a30, a31};
        const long valid = columns - column < 16 ? columns - column : 16;
        for (long row = 0; row < rows; ++row) {
            const __m256 low = _mm256_andnot_ps(sign, results[2 * row]), high = _mm256_andnot_ps(sign, results[2 * row + 1]);
            float *line = out + row * columns + column;
            if (valid == 16) {
                _mm256_storeu_ps(line, low);
                _mm256_storeu_ps(line + 8, high);
                maximum = _mm256_max_ps(maximum, _mm256_max_ps(low, high));
                sums[row] = _mm256_add_ps(sums[row], _mm256_add_ps(low, high));
            } else {
                float lanes[16];
                _mm256_storeu_ps(lanes, low);
                _mm256_storeu_ps(lanes + 8, high);
                for (long lane = 0; lane < valid; ++lane) {
                    line[lane] = lanes[lane];
                    tail_sum += lanes[lane];
                    if (lanes[lane] > tail_max) tail_max = lanes[lane];
                }
            }
        }
    }
    double total = tail_sum;
    for (long row = 0; row < rows; ++row) total += horizontal_sum(sums[row]);
    *sum += total;
    const float vector_max = horizontal_max(maximum);
    return vector_max > tail_max ? vector_max : tail_max;
}

float lf_lowrank_abs_rows(const float *up, long rows, long rank, const float *down, long stride, long columns,
                          float *out, double *sum) {
    static int has_avx2 = -1;
    if (has_avx2 < 0) {
        __builtin_cpu_init();
        has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (has_avx2 && rows >= 1 && rows <= 4 && stride % 16 == 0) return lowrank_abs_rows_avx2(up, rows, rank, down, stride, columns, out, sum);
    return lowrank_abs_rows_generic(up, rows, rank, down, stride, columns, out, sum);
}
#else
float lf_lowrank_abs_rows(const float *up, long rows, long rank, const float *down, long stride, long columns,
                          float *out, double *sum) {
    return lowrank_abs_rows_generic(up, rows, rank, down, stride, columns, out, sum);
}
#endif
