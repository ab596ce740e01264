#version 450
// out = y + scale · (x · downᵀ) · upᵀ — a LoRA path beside a Linear — for a block of
// rows per workgroup. The rank-r intermediate (x · downᵀ, scaled) lives in shared memory
// only: it is never written to device memory and read back, and the base output y is
// read once. Factors are float32 / float16 / bfloat16 (define F_F32, F_F16 or F_BF16).
layout(local_size_x = 64) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint SHARED_FLOATS = 2048;  // rows_per_group · rank ≤ this (8 KiB)
const uint MAX_ROWS = 16;

layout(std430, binding = 0) readonly buffer YBuffer { float y_data[]; };
layout(std430, binding = 1) readonly buffer XBuffer { float x_data[]; };
#if defined(F_F32)
layout(std430, binding = 2) readonly buffer DownBuffer { float down_data[]; };
layout(std430, binding = 3) readonly buffer UpBuffer { float up_data[]; };
float load_down(uint index) { return down_data[index]; }
float load_up(uint index) { return up_data[index]; }
#elif defined(F_F16)
layout(std430, binding = 2) readonly buffer DownBuffer { uint down_words[]; };
layout(std430, binding = 3) readonly buffer UpBuffer { uint up_words[]; };
float load_down(uint index) { return half_at(down_words[index >> 1], index & 1u); }
float load_up(uint index) { return half_at(up_words[index >> 1], index & 1u); }
#else
layout(std430, binding = 2) readonly buffer DownBuffer { uint down_words[]; };
layout(std430, binding = 3) readonly buffer UpBuffer { uint up_words[]; };
float load_down(uint index) { return bfloat_at(down_words[index >> 1], index & 1u); }
float load_up(uint index) { return bfloat_at(up_words[index >> 1], index & 1u); }
#endif
layout(std430, binding = 4) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint rows, n, k, rank;
    uint rows_per_group;          // ≤ MAX_ROWS and rows_per_group · rank ≤ SHARED_FLOATS
    float scale;
    uint x_offset, y_offset, out_offset;  // element offsets inside the bound windows
} p;

shared float low[SHARED_FLOATS];  // [row · rank + j] = scale · x[row] · down[j]

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint first = flat_workgroup() * p.rows_per_group;
    if (first >= p.rows) return;  // uniform per workgroup, so the barrier stays legal
    uint count = min(p.rows_per_group, p.rows - first);

    // Phase 1: the rank-r rows of this block, one dot product of length K per entry.
    for (uint entry = lane; entry < count * p.rank; entry += gl_WorkGroupSize.x) {
        uint row = entry / p.rank, j = entry % p.rank;
        uint x_base = p.x_offset + (first + row) * p.k, down_base = j * p.k;
        float sum = 0.0;
        for (uint kk = 0; kk < p.k; ++kk) sum += x_data[x_base + kk] * load_down(down_base + kk);
        low[entry] = p.scale * sum;
    }
    barrier();

    // Phase 2: each lane owns output columns; the block's rows accumulate in registers
    // while the column's up row streams through once.
    for (uint column = lane; column < p.n; column += gl_WorkGroupSize.x) {
        float acc[MAX_ROWS];
        [[unroll]] for (uint row = 0; row < MAX_ROWS; ++row) acc[row] = 0.0;
        uint up_base = column * p.rank;
        for (uint j = 0; j < p.rank; ++j) {
            float u = load_up(up_base + j);
            [[unroll]] for (uint row = 0; row < MAX_ROWS; ++row) {
                if (row < count) acc[row] += low[row * p.rank + j] * u;
            }
        }
        [[unroll]] for (uint row = 0; row < MAX_ROWS; ++row) {
            if (row < count) {
                uint index = (first + row) * p.n + column;
                out_data[p.out_offset + index] = y_data[p.y_offset + index] + acc[row];
            }
        }
    }
}
