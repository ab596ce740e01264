#version 450
// Row-wise ops over the last axis, one workgroup per row with a shared-memory reduction:
// softmax (max-subtracted), LayerNorm (two-pass mean and centred variance, optional
// affine), RMSNorm (optional weight).
layout(local_size_x = 128) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer InBuffer { float in_data[]; };
layout(std430, binding = 1) readonly buffer WeightBuffer { float weight[]; };
layout(std430, binding = 2) readonly buffer BiasBuffer { float bias[]; };
layout(std430, binding = 3) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint rows;
    uint width;
    uint mode;        // ROWWISE_*
    uint has_weight;  // LayerNorm: weight and bias; RMSNorm: weight
    float epsilon;
} p;

shared float partial[128];

float reduce_sum(float value) {
    uint lane = gl_LocalInvocationID.x;
    partial[lane] = value;
    barrier();
    for (uint stride = 64; stride > 0; stride >>= 1) {
        if (lane < stride) partial[lane] += partial[lane + stride];
        barrier();
    }
    float total = partial[0];
    barrier();
    return total;
}

float reduce_max(float value) {
    uint lane = gl_LocalInvocationID.x;
    partial[lane] = value;
    barrier();
    for (uint stride = 64; stride > 0; stride >>= 1) {
        if (lane < stride) partial[lane] = max(partial[lane], partial[lane + stride]);
        barrier();
    }
    float total = partial[0];
    barrier();
    return total;
}

void main() {
    uint row = flat_workgroup();
    if (row >= p.rows) return;  // uniform per workgroup, so barriers stay legal
    uint lane = gl_LocalInvocationID.x;
    uint base = row * p.width;
    if (p.mode == ROWWISE_SOFTMAX) {
        float maximum = -1.0 / 0.0;
        for (uint j = lane; j < p.width; j += 128) maximum = max(maximum, in_data[base + j]);
        maximum = reduce_max(maximum);
        if (isinf(maximum) && maximum < 0.0) {
            for (uint j = lane; j < p.width; j += 128) out_data[base + j] = uintBitsToFloat(0x7FC00000u);
            return;
        }
        float sum = 0.0;
        for (uint j = lane; j < p.width; j += 128) sum += exp(in_data[base + j] - maximum);
        float inverse = 1.0 / reduce_sum(sum);
        for (uint j = lane; j < p.width; j += 128) out_data[base + j] = exp(in_data[base + j] - maximum) * inverse;
    } else if (p.mode == ROWWISE_LAYER_NORM) {
        float sum = 0.0;
        for (uint j = lane; j < p.width; j += 128) sum += in_data[base + j];
        float mean = reduce_sum(sum) / float(p.width);
        float squares = 0.0;
        for (uint j = lane; j < p.width; j += 128) { float d = in_data[base + j] - mean; squares += d * d; }
        float inverse = inversesqrt(reduce_sum(squares) / float(p.width) + p.epsilon);
        for (uint j = lane; j < p.width; j += 128) {
            float normalized = (in_data[base + j] - mean) * inverse;
            out_data[base + j] = p.has_weight != 0u ? normalized * weight[j] + bias[j] : normalized;
        }
    } else {
        float squares = 0.0;
        for (uint j = lane; j < p.width; j += 128) { float v = in_data[base + j]; squares += v * v; }
        float inverse = inversesqrt(reduce_sum(squares) / float(p.width) + p.epsilon);
        for (uint j = lane; j < p.width; j += 128) {
            float normalized = in_data[base + j] * inverse;
            out_data[base + j] = p.has_weight != 0u ? normalized * weight[j] : normalized;
        }
    }
}
