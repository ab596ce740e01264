#version 450
// Fused attention for CPU Vulkan devices (Mesa's lavapipe), where every buffer or shared
// memory load is costly and arithmetic is cheap: no shared memory, no barriers; each
// invocation owns QUERIES query rows (queries lane, lane + 64, …) and reads each key and
// value row once for all of them, four elements per load. Online softmax over tiles of 8
// keys (one rescale per tile); the scores never leave registers. Same math and push
// constants as attention.comp.
layout(local_size_x = 64) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint HEAD_DIM = 64;  // a multiple of 4
layout(constant_id = 1) const uint QUERIES = 8;
const uint KEY_TILE = 8;
const uint VECTORS = HEAD_DIM / 4;

layout(std430, binding = 0) readonly buffer QBuffer { vec4 q_data[]; };
#if defined(TEXEL)
// Keys and values bound as uniform texel buffers (RGBA32F): every lane reads the same key
// row, and lavapipe turns a texel fetch into one gather for the 8 lanes, where a storage
// buffer load is a loop over the lanes with a branch per element.
layout(binding = 1) uniform samplerBuffer k_texels;
layout(binding = 2) uniform samplerBuffer v_texels;
#define LOAD_K(index) texelFetch(k_texels, int(p.k_offset + (index)))
#define LOAD_V(index) texelFetch(v_texels, int(p.v_offset + (index)))
#else
layout(std430, binding = 1) readonly buffer KBuffer { vec4 k_data[]; };
layout(std430, binding = 2) readonly buffer VBuffer { vec4 v_data[]; };
#define LOAD_K(index) k_data[index]
#define LOAD_V(index) v_data[index]
#endif
layout(std430, binding = 3) readonly buffer MaskBuffer { float mask_data[]; };
layout(std430, binding = 4) writeonly buffer OutBuffer { vec4 out_data[]; };

layout(push_constant) uniform Parameters {
    uint query_length, key_length, heads;
    float scale;
    uint causal;
    uint has_mask;
    uint mask_batch_stride, mask_head_stride;
    uint query_blocks;  // ceil(Lq / (64 · QUERIES))
    uint k_offset, v_offset;  // texel variant: vec4 offsets of K and V inside their views
} p;

void main() {
    uint group = flat_workgroup();
    uint block = group % p.query_blocks;
    uint head = (group / p.query_blocks) % p.heads;
    uint batch = group / (p.query_blocks * p.heads);
    uint row_vectors = p.heads * VECTORS;  // vec4s per token row
    uint first = block * 64 * QUERIES + gl_LocalInvocationID.x;

    vec4 q[QUERIES][VECTORS];
    vec4 acc[QUERIES][VECTORS];
    float running_max[QUERIES], running_sum[QUERIES];
    uint visible[QUERIES], mask_base[QUERIES];
    [[unroll]] for (uint i = 0; i < QUERIES; ++i) {
        uint query = min(first + 64 * i, p.query_length - 1);
        uint base = (batch * p.query_length + query) * row_vectors + head * VECTORS;
        [[unroll]] for (uint d = 0; d < VECTORS; ++d) { q[i][d] = q_data[base + d] * p.scale; acc[i][d] = vec4(0.0); }
        running_max[i] = -1.0 / 0.0;
        running_sum[i] = 0.0;
        visible[i] = p.causal != 0u ? min(p.key_length, query + 1 + p.key_length - p.query_length) : p.key_length;
        mask_base[i] = batch * p.mask_batch_stride + head * p.mask_head_stride + query * p.key_length;
    }
    for (uint key0 = 0; key0 < p.key_length; key0 += KEY_TILE) {
        float scores[QUERIES][KEY_TILE];
        [[unroll]] for (uint j = 0; j < KEY_TILE; ++j) {
            uint key = min(key0 + j, p.key_length - 1);
            uint k_base = (batch * p.key_length + key) * row_vectors + head * VECTORS;
            float dots[QUERIES];
            [[unroll]] for (uint i = 0; i < QUERIES; ++i) dots[i] = 0.0;
            [[unroll]] for (uint d = 0; d < VECTORS; ++d) {
                vec4 kv = LOAD_K(k_base + d);
                [[unroll]] for (uint i = 0; i < QUERIES; ++i) dots[i] += dot(q[i][d], kv);
            }
            [[unroll]] for (uint i = 0; i < QUERIES; ++i) {
                float s = dots[i];
                if (p.has_mask != 0u) s += mask_data[mask_base[i] + key];
                if (key0 + j >= visible[i]) s = -1.0 / 0.0;
                scores[i][j] = s;
            }
        }
        float weights[QUERIES][KEY_TILE];
        bool any_visible = false;
        [[unroll]] for (uint i = 0; i < QUERIES; ++i) {
            float tile_max = scores[i][0];
            [[unroll]] for (uint j = 1; j < KEY_TILE; ++j) tile_max = max(tile_max, scores[i][j]);
            float new_max = max(running_max[i], tile_max);
            bool masked = isinf(new_max) && new_max < 0.0;  // everything so far is masked
            float correction = masked ? 1.0 : exp(running_max[i] - new_max);
            running_sum[i] *= correction;
            [[unroll]] for (uint d = 0; d < VECTORS; ++d) acc[i][d] *= correction;
            [[unroll]] for (uint j = 0; j < KEY_TILE; ++j) {
                weights[i][j] = masked ? 0.0 : exp(scores[i][j] - new_max);
                running_sum[i] += weights[i][j];
            }
            running_max[i] = masked ? running_max[i] : new_max;
            any_visible = any_visible || !masked;
        }
        if (!any_visible) continue;
        [[unroll]] for (uint j = 0; j < KEY_TILE; ++j) {
            uint key = min(key0 + j, p.key_length - 1);
            uint v_base = (batch * p.key_length + key) * row_vectors + head * VECTORS;
            [[unroll]] for (uint d = 0; d < VECTORS; ++d) {
                vec4 vv = LOAD_V(v_base + d);
                [[unroll]] for (uint i = 0; i < QUERIES; ++i) acc[i][d] += weights[i][j] * vv;
            }
        }
    }
    [[unroll]] for (uint i = 0; i < QUERIES; ++i) {
        uint query = first + 64 * i;
        if (query >= p.query_length) continue;
        // A fully masked row divides 0 by 0: NaN, as the reference frameworks give.
        float inverse = 1.0 / running_sum[i];
        uint base = (batch * p.query_length + query) * row_vectors + head * VECTORS;
        [[unroll]] for (uint d = 0; d < VECTORS; ++d) out_data[base + d] = acc[i][d] * inverse;
    }
}
