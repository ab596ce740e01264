#version 450
// Fused attention, flash-attention style: softmax(scale·Q·Kᵀ + mask)·V for q [B, Lq, H, D]
// and k, v [B, Lk, H, D] without writing the Lq×Lk scores anywhere. A workgroup holds 64
// query rows of one (batch, head); keys and values stream through shared memory 16 at a
// time, and each invocation keeps an online softmax (running max, running sum, rescaled
// accumulator) per query row.
layout(local_size_x = 64) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint HEAD_DIM = 64;
const uint KEY_TILE = 16;

layout(std430, binding = 0) readonly buffer QBuffer { float q_data[]; };
layout(std430, binding = 1) readonly buffer KBuffer { float k_data[]; };
layout(std430, binding = 2) readonly buffer VBuffer { float v_data[]; };
layout(std430, binding = 3) readonly buffer MaskBuffer { float mask_data[]; };
layout(std430, binding = 4) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint query_length, key_length, heads;
    float scale;
    uint causal;
    uint has_mask;
    uint mask_batch_stride, mask_head_stride;  // elements; 0 where the mask broadcasts
    uint query_blocks;                          // ceil(Lq / 64)
    uint k_offset, v_offset;  // unused here: the block is attention_registers.comp's, so both share one host struct
} p;

shared float k_tile[KEY_TILE * HEAD_DIM];
shared float v_tile[KEY_TILE * HEAD_DIM];

void main() {
    uint group = flat_workgroup();
    uint block = group % p.query_blocks;
    uint head = (group / p.query_blocks) % p.heads;
    uint batch = group / (p.query_blocks * p.heads);
    uint query = block * 64 + gl_LocalInvocationID.x;
    bool in_range = query < p.query_length;
    uint row_stride = p.heads * HEAD_DIM;

    float q[HEAD_DIM];
    float acc[HEAD_DIM];
    uint q_base = (batch * p.query_length + min(query, p.query_length - 1)) * row_stride + head * HEAD_DIM;
    [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) { q[d] = q_data[q_base + d] * p.scale; acc[d] = 0.0; }
    float running_max = -1.0 / 0.0;
    float running_sum = 0.0;
    // Keys visible to this query under the causal mask (bottom-right aligned).
    uint visible = p.causal != 0u ? min(p.key_length, query + 1 + p.key_length - p.query_length) : p.key_length;
    uint mask_base = batch * p.mask_batch_stride + head * p.mask_head_stride + min(query, p.query_length - 1) * p.key_length;

    for (uint key0 = 0; key0 < p.key_length; key0 += KEY_TILE) {
        barrier();
        for (uint e = gl_LocalInvocationID.x; e < KEY_TILE * HEAD_DIM; e += 64) {
            uint j = e / HEAD_DIM, d = e % HEAD_DIM;
            uint key = key0 + j;
            uint source = (batch * p.key_length + min(key, p.key_length - 1)) * row_stride + head * HEAD_DIM + d;
            k_tile[e] = k_data[source];
            v_tile[e] = v_data[source];
        }
        barrier();
        if (!in_range) continue;
        float scores[KEY_TILE];
        float tile_max = -1.0 / 0.0;
        [[unroll]] for (uint j = 0; j < KEY_TILE; ++j) {
            uint key = key0 + j;
            float s = 0.0;
            [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) s = fma(q[d], k_tile[j * HEAD_DIM + d], s);
            if (p.has_mask != 0u && key < p.key_length) s += mask_data[mask_base + key];
            if (key >= visible) s = -1.0 / 0.0;
            scores[j] = s;
            tile_max = max(tile_max, s);
        }
        float new_max = max(running_max, tile_max);
        if (isinf(new_max) && new_max < 0.0) continue;  // everything so far is masked
        float correction = exp(running_max - new_max);
        running_sum *= correction;
        [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) acc[d] *= correction;
        [[unroll]] for (uint j = 0; j < KEY_TILE; ++j) {
            float weight = exp(scores[j] - new_max);
            running_sum += weight;
            [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) acc[d] = fma(weight, v_tile[j * HEAD_DIM + d], acc[d]);
        }
        running_max = new_max;
    }
    if (!in_range) return;
    // A fully masked row divides 0 by 0: NaN, as the reference frameworks give.
    float inverse = 1.0 / running_sum;
    uint out_base = (batch * p.query_length + query) * row_stride + head * HEAD_DIM;
    [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) out_data[out_base + d] = acc[d] * inverse;
}
