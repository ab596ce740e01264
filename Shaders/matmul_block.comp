#version 450
// C[batch, M, N] = A[batch, M, K] · Wᵀ for a GGUF block-quantized Linear weight W [N, K]
// (define B_Q4_0 … B_Q6_K; see weight_blocks.glsl), float32 accumulation, register blocks of
// TM × TN outputs per invocation as matmul.comp's register variant. K is walked 16 elements
// at a time: each column's block scales are decoded once per 16 (`group_scale`), then each
// element costs its bits alone (`group_quant`) and one fma — instead of decoding the scales
// for every element as `load_b` does. W's rows run along K (b_row_stride 1, the Linear layout,
// which the graph requires of block weights); K is a whole number of blocks.
layout(local_size_x = 8, local_size_y = 8, local_size_z = 1) in;
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint TM = 4;
layout(constant_id = 1) const uint TN = 4;

layout(std430, binding = 0) readonly buffer ABuffer { float a_data[]; };
#define WEIGHT_BINDING 1
#include "weight_load.glsl"
layout(std430, binding = 2) writeonly buffer CBuffer { float c_data[]; };

layout(push_constant) uniform Parameters {
    uint M, N, K;
    uint a_row_stride, a_col_stride;   // a(m, k) at m·a_row_stride + k·a_col_stride
    uint b_row_stride, b_col_stride;   // b(k, n) at k·b_row_stride + n·b_col_stride (b_row_stride = 1)
    uint batch1, batch2;               // batch = (i0, i1, i2) with z = (i0·batch1 + i1)·batch2 + i2
    uint a_batch0, a_batch1, a_batch2; // element strides per batch axis (0 = broadcast)
    uint b_batch0, b_batch1, b_batch2;
    uint a_offset, b_offset, c_offset;  // element offsets inside the bound windows
    uint c_row_stride;                  // c(m, n) at m·c_row_stride + n
} p;

void main() {
    uint z = gl_WorkGroupID.z;
    uint i2 = z % p.batch2, i1 = (z / p.batch2) % p.batch1, i0 = z / (p.batch2 * p.batch1);
    uint a_base = p.a_offset + i0 * p.a_batch0 + i1 * p.a_batch1 + i2 * p.a_batch2;
    uint b_base = p.b_offset + i0 * p.b_batch0 + i1 * p.b_batch1 + i2 * p.b_batch2;
    uint c_base = p.c_offset + z * p.M * p.c_row_stride;
    uint row0 = gl_GlobalInvocationID.y * TM;
    uint col0 = gl_GlobalInvocationID.x * TN;
    if (row0 >= p.M || col0 >= p.N) return;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;
    // Clamp instead of branching: edge invocations recompute the last row/column.
    uint a_rows[TM];
    uint b_cols[TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) a_rows[i] = a_base + min(row0 + i, p.M - 1) * p.a_row_stride;
    [[unroll]] for (uint j = 0; j < TN; ++j) b_cols[j] = b_base + min(col0 + j, p.N - 1) * p.b_col_stride;
    for (uint k0 = 0; k0 < p.K; k0 += 16u) {
        float scale[TN], offset[TN];
        uint block[TN], first[TN];
        [[unroll]] for (uint j = 0; j < TN; ++j) {
            uint index = b_cols[j] + k0;
            block[j] = (index / QK) * BLOCK_BYTES;
            first[j] = index % QK;
            group_scale(block[j], first[j], scale[j], offset[j]);
        }
        for (uint kk = 0; kk < 16u; ++kk) {
            float av[TM];
            float bv[TN];
            uint a_k = (k0 + kk) * p.a_col_stride;
            [[unroll]] for (uint i = 0; i < TM; ++i) av[i] = a_data[a_rows[i] + a_k];
            [[unroll]] for (uint j = 0; j < TN; ++j) bv[j] = fma(scale[j], group_quant(block[j], first[j] + kk), offset[j]);
            [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
    }
    [[unroll]] for (uint i = 0; i < TM; ++i) {
        uint r = row0 + i;
        if (r >= p.M) break;
        [[unroll]] for (uint j = 0; j < TN; ++j) {
            uint c = col0 + j;
            if (c < p.N) c_data[c_base + r * p.c_row_stride + c] = acc[i][j];
        }
    }
}
