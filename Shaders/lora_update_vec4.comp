#version 450
// lora_update.comp with 4-wide loads, for K and the rank multiples of 4 (every real
// LoRA): out = y + scale · (x · downᵀ) · upᵀ for a block of rows per workgroup, the
// rank-r block kept in shared memory. Each invocation produces 4 output columns for all
// the block's rows, so every up vector and every shared rank-r vector it loads feeds 4–16
// FMAs — what a CPU Vulkan device like lavapipe needs (loads cost more than arithmetic).
// Factors are float32 / float16 / bfloat16 (define F_F32, F_F16 or F_BF16).
layout(local_size_x = 64) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint SHARED_VECTORS = 512;  // rows_per_group · rank / 4 ≤ this (8 KiB)
const uint MAX_ROWS = 16;

layout(std430, binding = 0) readonly buffer YBuffer { float y_data[]; };
layout(std430, binding = 1) readonly buffer XBuffer { vec4 x_data[]; };
#if defined(F_F32)
layout(std430, binding = 2) readonly buffer DownBuffer { vec4 down_data[]; };
layout(std430, binding = 3) readonly buffer UpBuffer { vec4 up_data[]; };
vec4 load_down4(uint index4) { return down_data[index4]; }
vec4 load_up4(uint index4) { return up_data[index4]; }
#elif defined(F_F16)
layout(std430, binding = 2) readonly buffer DownBuffer { uvec2 down_words[]; };
layout(std430, binding = 3) readonly buffer UpBuffer { uvec2 up_words[]; };
vec4 unpack4(uvec2 w) { return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
vec4 load_down4(uint index4) { return unpack4(down_words[index4]); }
vec4 load_up4(uint index4) { return unpack4(up_words[index4]); }
#else
layout(std430, binding = 2) readonly buffer DownBuffer { uvec2 down_words[]; };
layout(std430, binding = 3) readonly buffer UpBuffer { uvec2 up_words[]; };
vec4 unpack4(uvec2 w) { return bfloat_words(w); }
vec4 load_down4(uint index4) { return unpack4(down_words[index4]); }
vec4 load_up4(uint index4) { return unpack4(up_words[index4]); }
#endif
layout(std430, binding = 4) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint rows, n, k, rank;
    uint rows_per_group;
    float scale;
    uint x_offset, y_offset, out_offset;  // element offsets; x_offset is a multiple of 4
} p;

shared vec4 low[SHARED_VECTORS];  // [row · rank/4 + j/4][j % 4] = scale · x[row] · down[j]

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint first = flat_workgroup() * p.rows_per_group;
    if (first >= p.rows) return;  // uniform per workgroup, so the barrier stays legal
    uint count = min(p.rows_per_group, p.rows - first);
    uint k4 = p.k / 4u, rank4 = p.rank / 4u;

    // Phase 1: one K-long dot product per (row, j), 4 products per load pair.
    for (uint entry = lane; entry < count * p.rank; entry += gl_WorkGroupSize.x) {
        uint row = entry / p.rank, j = entry % p.rank;
        uint x_base = p.x_offset / 4u + (first + row) * k4, down_base = j * k4;
        vec4 sum = vec4(0.0);
        for (uint kk = 0; kk < k4; ++kk) sum += x_data[x_base + kk] * load_down4(down_base + kk);
        low[row * rank4 + j / 4u][j % 4u] = p.scale * (sum.x + sum.y + sum.z + sum.w);
    }
    barrier();

    // Phase 2: 4 columns per invocation; the block's rows accumulate in registers.
    for (uint column0 = lane * 4u; column0 < p.n; column0 += 4u * gl_WorkGroupSize.x) {
        uint columns = min(4u, p.n - column0);
        vec4 acc[MAX_ROWS];
        [[unroll]] for (uint row = 0; row < MAX_ROWS; ++row) acc[row] = vec4(0.0);
        uint up_base[4];
        [[unroll]] for (uint c = 0; c < 4u; ++c) up_base[c] = min(column0 + c, p.n - 1u) * rank4;
        for (uint j4 = 0; j4 < rank4; ++j4) {
            vec4 u0 = load_up4(up_base[0] + j4), u1 = load_up4(up_base[1] + j4);
            vec4 u2 = load_up4(up_base[2] + j4), u3 = load_up4(up_base[3] + j4);
            [[unroll]] for (uint row = 0; row < MAX_ROWS; ++row) {
                if (row < count) {
                    vec4 l = low[row * rank4 + j4];
                    acc[row] += vec4(dot(l, u0), dot(l, u1), dot(l, u2), dot(l, u3));
                }
            }
        }
        [[unroll]] for (uint row = 0; row < MAX_ROWS; ++row) {
            if (row < count) {
                uint index = (first + row) * p.n + column0;
                [[unroll]] for (uint c = 0; c < 4u; ++c) {
                    if (c < columns) out_data[p.out_offset + index + c] = y_data[p.y_offset + index + c] + acc[row][c];
                }
            }
        }
    }
}
