#version 450
// Matmul for the PyTorch Linear layout — A [M, K] row-major and B read as Bᵀ [N, K], both
// contiguous along K — with K a multiple of 4: every load fetches 4 consecutive k at once
// (vec4 of float32, 4 packed halves or one word of 4 float8), and each invocation accumulates a TM × TN block
// in registers. No shared memory: this is the kernel Mesa's lavapipe runs fastest, since
// each invocation's loads are separate (gathered) memory accesses there.
layout(local_size_x = 8, local_size_y = 8, local_size_z = 1) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint TM = 8;
layout(constant_id = 1) const uint TN = 8;

#if defined(TEXEL)
// A and B bound as uniform texel buffers (views of the same memory, one texel = 4 values along
// K): on lavapipe a texel fetch is one vector gather for the 8 lanes, where a storage-buffer
// load is a loop over the lanes with a bounds check and a branch per element.
layout(binding = 0) uniform samplerBuffer a_texels;  // R32G32B32A32_SFLOAT
vec4 load_a4(uint index4) { return texelFetch(a_texels, int(index4)); }
#define WEIGHT_BINDING 1
#include "weight_texel.glsl"
#else
layout(std430, binding = 0) readonly buffer ABuffer { vec4 a_data[]; };
vec4 load_a4(uint index4) { return a_data[index4]; }
#if defined(B_F32)
layout(std430, binding = 1) readonly buffer BBuffer { vec4 b_data[]; };
vec4 load_b4(uint index4) { return b_data[index4]; }
#elif defined(B_F16)
layout(std430, binding = 1) readonly buffer BBuffer { uvec2 b_words[]; };
vec4 load_b4(uint index4) { uvec2 w = b_words[index4]; return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
#elif defined(B_F8E4M3)
layout(std430, binding = 1) readonly buffer BBuffer { uint b_words[]; };
vec4 load_b4(uint index4) { return fp8e4m3_word(b_words[index4]); }
#elif defined(B_F8E5M2)
layout(std430, binding = 1) readonly buffer BBuffer { uint b_words[]; };
vec4 load_b4(uint index4) { return fp8e5m2_word(b_words[index4]); }
#else
layout(std430, binding = 1) readonly buffer BBuffer { uvec2 b_words[]; };
vec4 load_b4(uint index4) { return bfloat_words(b_words[index4]); }
#endif
#endif
layout(std430, binding = 2) writeonly buffer CBuffer { float c_data[]; };

layout(push_constant) uniform Parameters {
    uint M, N, K;
    uint a_row_stride, a_col_stride;   // a_col_stride == 1
    uint b_row_stride, b_col_stride;   // b_row_stride == 1: b(k, n) at n·b_col_stride + k
    uint batch1, batch2;
    uint a_batch0, a_batch1, a_batch2;
    uint b_batch0, b_batch1, b_batch2;
    uint a_offset, b_offset, c_offset;  // element offsets inside the bound windows
    uint c_row_stride;                  // c(m, n) at m·c_row_stride + n (N unless N is split)
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

    // Offsets in units of 4 elements; rows/columns clamped, stores masked.
    uint a_rows[TM];
    uint b_cols[TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) a_rows[i] = (a_base + min(row0 + i, p.M - 1) * p.a_row_stride) >> 2;
    [[unroll]] for (uint j = 0; j < TN; ++j) b_cols[j] = (b_base + min(col0 + j, p.N - 1) * p.b_col_stride) >> 2;
    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;
    uint steps = p.K >> 2;
    for (uint k4 = 0; k4 < steps; ++k4) {
        vec4 av[TM];
        vec4 bv[TN];
        [[unroll]] for (uint i = 0; i < TM; ++i) av[i] = load_a4(a_rows[i] + k4);
        [[unroll]] for (uint j = 0; j < TN; ++j) bv[j] = load_b4(b_cols[j] + k4);
        [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) {
            acc[i][j] = fma(av[i].x, bv[j].x, acc[i][j]);
            acc[i][j] = fma(av[i].y, bv[j].y, acc[i][j]);
            acc[i][j] = fma(av[i].z, bv[j].z, acc[i][j]);
            acc[i][j] = fma(av[i].w, bv[j].w, acc[i][j]);
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
