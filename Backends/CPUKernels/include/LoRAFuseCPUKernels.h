// Micro-kernels that need instruction sets the Swift compiler cannot target per function:
// each is compiled for its ISA with a target attribute and chosen at run time.
#ifndef LORAFUSE_CPU_KERNELS_H
#define LORAFUSE_CPU_KERNELS_H

/// 1 when the CPU (and OS) support AVX-512F.
int lf_cpu_supports_avx512(void);

/// C[14×32] (+)= Apanel[depth×14]ᵀ · Bpanel[depth×32] with AVX-512 (28 zmm accumulators).
/// `a` holds 14 values per depth step, `b` 32; `c` rows are `ldc` floats apart.
void lf_gemm_kernel_14x32_avx512(long depth, const float *a, const float *b, float *c, long ldc, int accumulate);

/// Widens `blocks` GGUF blocks of ggml type `type` (2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0,
/// 10…14 Q2_K…Q6_K) at `source` into float32 at `out`, with AVX-512 (call only where
/// lf_cpu_supports_avx512()): bit for bit the values of the portable routines. Returns 0,
/// writing nothing, for any other type.
int lf_dequantize_blocks_avx512(int type, const void *source, long blocks, float *out);

/// Magnitudes of `rows` (1 to 4) rows of ΔW = up · down — up [rows, rank] row-major, down
/// [rank, stride] with its rows zero-padded to `stride` (a multiple of 16) — for columns
/// [0, columns): written to out[row · columns + column], their sum added to *sum, their
/// maximum returned. AVX2+FMA where the CPU has it (4 rows × 16 columns in registers).
float lf_lowrank_abs_rows(const float *up, long rows, long rank, const float *down, long stride, long columns,
                          float *out, double *sum);

/// Attention, a strip of 1 to 14 query rows at a time, for any head dim (AVX-512).
/// K of one head, [keys × depth] with rows `stride` floats apart, packed as panels of 32
/// keys: ⌈keys/32⌉ · depth · 32 floats, keys past the end zero.
void lf_attention_pack_keys(const float *k, long stride, long keys, long depth, float *out);
/// V of one head packed as ⌈depth/32⌉ panels of [⌈keys/32⌉·32 × 32] floats, padding zero.
void lf_attention_pack_values(const float *v, long stride, long keys, long depth, float *out);
/// scores[i · scores_stride + j] = q_i · k_j for the strip's rows and j < ⌈keys/32⌉·32
/// (so scores_stride must be at least that). workspace: 14 · depth floats.
void lf_attention_scores_avx512(const float *q, long q_stride, long rows, long depth,
                                const float *packed_keys, long keys, float *scores, long scores_stride, float *workspace);
/// out_i = inverses[i] · Σ_{j < keys} p_ij · v_j for the strip's rows (depth columns
/// written). workspace: 14 · keys floats.
void lf_attention_values_avx512(const float *probabilities, long p_stride, long rows, long keys,
                                const float *packed_values, long depth, const float *inverses,
                                float *out, long out_stride, float *workspace);
/// The unnormalised softmax of scale · x (scale > 0) with AVX-512: out = exp(scale·(x − max x)),
/// returning 1 / Σ out; a row with no finite entry gives NaN (as the Swift version does).
float lf_softmax_row_avx512(const float *x, float *out, long width, float scale);

#endif
