// Micro-kernels that need instruction sets the Swift compiler cannot target per function:
// each is compiled for its ISA with a target attribute and chosen at run time.
#ifndef LORAFUSE_CPU_KERNELS_H
#define LORAFUSE_CPU_KERNELS_H

/// 1 when the CPU (and OS) support AVX-512F.
int lf_cpu_supports_avx512(void);

/// C[14×32] (+)= Apanel[depth×14]ᵀ · Bpanel[depth×32] with AVX-512 (28 zmm accumulators).
/// `a` holds 14 values per depth step, `b` 32; `c` rows are `ldc` floats apart.
void lf_gemm_kernel_14x32_avx512(long depth, const float *a, const float *b, float *c, long ldc, int accumulate);

/// Magnitudes of `rows` (1 to 4) rows of ΔW = up · down — up [rows, rank] row-major, down
/// [rank, stride] with its rows zero-padded to `stride` (a multiple of 16) — for columns
/// [0, columns): written to out[row · columns + column], their sum added to *sum, their
/// maximum returned. AVX2+FMA where the CPU has it (4 rows × 16 columns in registers).
float lf_lowrank_abs_rows(const float *up, long rows, long rank, const float *down, long stride, long columns,
                          float *out, double *sum);

#endif
