#version 450
// C[batch, M, N] = A[batch, M, K] · B[batch, K, N], A float32, B float32 / float16 /
// bfloat16 / float8 (define B_F32, B_F16, B_BF16, B_F8E4M3 or B_F8E5M2), float32 accumulation. Operands are read
// through strides, so transposed weights (PyTorch Linear [N, K]) are never copied.
//
// Two variants (define TILED or not):
//  - TILED: BM×BN output tile per workgroup, staged through shared memory in BK-deep
//    slices, TM×TN outputs per invocation — the layout real GPUs reward.
//  - registers: each invocation computes TM×TN outputs straight from memory with clamped
//    (branch-free) loads — what Mesa's lavapipe, a CPU rasteriser, runs fastest.
layout(local_size_x = 8, local_size_y = 8, local_size_z = 1) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint TM = 8;
layout(constant_id = 1) const uint TN = 8;

layout(std430, binding = 0) readonly buffer ABuffer { float a_data[]; };
#define WEIGHT_BINDING 1
#include "weight_load.glsl"
layout(std430, binding = 2) writeonly buffer CBuffer { float c_data[]; };

layout(push_constant) uniform Parameters {
    uint M, N, K;
    uint a_row_stride, a_col_stride;   // a(m, k) at m·a_row_stride + k·a_col_stride
    uint b_row_stride, b_col_stride;   // b(k, n) at k·b_row_stride + n·b_col_stride
    uint batch1, batch2;               // batch = (i0, i1, i2) with z = (i0·batch1 + i1)·batch2 + i2
    uint a_batch0, a_batch1, a_batch2; // element strides per batch axis (0 = broadcast)
    uint b_batch0, b_batch1, b_batch2;
    uint a_offset, b_offset, c_offset;  // element offsets inside the bound windows
    uint c_row_stride;                  // c(m, n) at m·c_row_stride + n (N unless N is split)
} p;

#ifdef TILED
const uint BK = 16;
const uint TILE_M = 8u * TM;
const uint TILE_N = 8u * TN;
shared float a_tile[BK * TILE_M];  // [kk · TILE_M + row]
shared float b_tile[BK * TILE_N];  // [kk · TILE_N + column]
#endif

void main() {
    uint z = gl_WorkGroupID.z;
    uint i2 = z % p.batch2, i1 = (z / p.batch2) % p.batch1, i0 = z / (p.batch2 * p.batch1);
    uint a_base = p.a_offset + i0 * p.a_batch0 + i1 * p.a_batch1 + i2 * p.a_batch2;
    uint b_base = p.b_offset + i0 * p.b_batch0 + i1 * p.b_batch1 + i2 * p.b_batch2;
    uint c_base = p.c_offset + z * p.M * p.c_row_stride;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

#ifdef TILED
    // Workgroup tile: TILE_M rows × TILE_N columns; invocation (lx, ly) owns rows
    // ly + 8·i and columns lx + 8·j (strided, so shared-memory reads do not conflict).
    uint row0 = gl_WorkGroupID.y * TILE_M;
    uint col0 = gl_WorkGroupID.x * TILE_N;
    uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
    uint local_index = ly * 8 + lx;
    // Neighbouring invocations read neighbouring addresses: along k when k is the
    // contiguous axis (row-major A, PyTorch Linear weights), along n otherwise.
    bool a_k_contiguous = p.a_col_stride == 1u;
    bool b_k_contiguous = p.b_row_stride == 1u;
    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        for (uint e = local_index; e < BK * TILE_M; e += 64) {
            uint kk = a_k_contiguous ? e % BK : e / TILE_M;
            uint rr = a_k_contiguous ? e / BK : e % TILE_M;
            uint r = row0 + rr, k = k0 + kk;
            a_tile[kk * TILE_M + rr] = (r < p.M && k < p.K) ? a_data[a_base + r * p.a_row_stride + k * p.a_col_stride] : 0.0;
        }
        for (uint e = local_index; e < BK * TILE_N; e += 64) {
            uint kk = b_k_contiguous ? e % BK : e / TILE_N;
            uint cc = b_k_contiguous ? e / BK : e % TILE_N;
            uint c = col0 + cc, k = k0 + kk;
            b_tile[kk * TILE_N + cc] = (c < p.N && k < p.K) ? load_b(b_base + k * p.b_row_stride + c * p.b_col_stride) : 0.0;
        }
        barrier();
        [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
            float av[TM];
            float bv[TN];
            [[unroll]] for (uint i = 0; i < TM; ++i) av[i] = a_tile[kk * TILE_M + ly + 8 * i];
            [[unroll]] for (uint j = 0; j < TN; ++j) bv[j] = b_tile[kk * TILE_N + lx + 8 * j];
            [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        barrier();
    }
    [[unroll]] for (uint i = 0; i < TM; ++i) {
        uint r = row0 + ly + 8 * i;
        [[unroll]] for (uint j = 0; j < TN; ++j) {
            uint c = col0 + lx + 8 * j;
            if (r < p.M && c < p.N) c_data[c_base + r * p.c_row_stride + c] = acc[i][j];
        }
    }
#else
    uint row0 = gl_GlobalInvocationID.y * TM;
    uint col0 = gl_GlobalInvocationID.x * TN;
    if (row0 >= p.M || col0 >= p.N) return;
    // Clamp instead of branching: edge invocations recompute the last row/column.
    uint a_rows[TM];
    uint b_cols[TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) a_rows[i] = a_base + min(row0 + i, p.M - 1) * p.a_row_stride;
    [[unroll]] for (uint j = 0; j < TN; ++j) b_cols[j] = b_base + min(col0 + j, p.N - 1) * p.b_col_stride;
    for (uint k = 0; k < p.K; ++k) {
        float av[TM];
        float bv[TN];
        uint a_k = k * p.a_col_stride, b_k = k * p.b_row_stride;
        [[unroll]] for (uint i = 0; i < TM; ++i) av[i] = a_data[a_rows[i] + a_k];
        [[unroll]] for (uint j = 0; j < TN; ++j) bv[j] = load_b(b_cols[j] + b_k);
        [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    [[unroll]] for (uint i = 0; i < TM; ++i) {
        uint r = row0 + i;
        if (r >= p.M) break;
        [[unroll]] for (uint j = 0; j < TN; ++j) {
            uint c = col0 + j;
            if (c < p.N) c_data[c_base + r * p.c_row_stride + c] = acc[i][j];
        }
    }
#endif
}
