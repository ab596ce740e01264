#version 450
// AutoLoRA's fused LoRA gate (DiffSynth LoraMerger), one workgroup per token row:
//   gᵢ = σ(w_base⊙LN_base(y₀) + w_lora⊙LN_lora(dᵢ) + w_cross⊙LN_base(y₀)⊙LN_lora(dᵢ) + bias)
//   out = y₀ + Σᵢ w_out⊙gᵢ⊙dᵢ
// The LayerNorm statistics of y₀ and of every dᵢ are reduced in shared memory first (two
// passes: mean, then centred variance), then each column is read once more and written
// once: no normalised row, gate or partial sum ever reaches device memory.
layout(local_size_x = 128) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer BaseBuffer { float base_data[]; };
// Rows: weight_base, weight_lora, weight_cross, weight_out, bias, norm_base (weight, bias),
// norm_lora (weight, bias); each `width` long.
layout(std430, binding = 1) readonly buffer ParameterBuffer { float parameter[]; };
layout(std430, binding = 2) readonly buffer Lora0 { float lora0[]; };
layout(std430, binding = 3) readonly buffer Lora1 { float lora1[]; };
layout(std430, binding = 4) readonly buffer Lora2 { float lora2[]; };
layout(std430, binding = 5) readonly buffer Lora3 { float lora3[]; };
layout(std430, binding = 6) readonly buffer Lora4 { float lora4[]; };
layout(std430, binding = 7) readonly buffer Lora5 { float lora5[]; };
layout(std430, binding = 8) readonly buffer Lora6 { float lora6[]; };
layout(std430, binding = 9) readonly buffer Lora7 { float lora7[]; };
layout(std430, binding = 10) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint rows;
    uint width;
    uint count;   // LoRA outputs, 1…8
    float epsilon;
} p;

const uint MAX_LORAS = 8;
shared float partial[128];
shared float means[MAX_LORAS + 1];
shared float inverses[MAX_LORAS + 1];

float load_lora(uint which, uint index) {
    switch (which) {
    case 0u: return lora0[index];
    case 1u: return lora1[index];
    case 2u: return lora2[index];
    case 3u: return lora3[index];
    case 4u: return lora4[index];
    case 5u: return lora5[index];
    case 6u: return lora6[index];
    default: return lora7[index];
    }
}

// Source 0 is y₀, source i + 1 is dᵢ.
float load_source(uint source, uint index) { return source == 0u ? base_data[index] : load_lora(source - 1u, index); }

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

void main() {
    uint row = flat_workgroup();
    if (row >= p.rows) return;  // uniform per workgroup, so barriers stay legal
    uint lane = gl_LocalInvocationID.x;
    uint offset = row * p.width;
    for (uint source = 0; source <= p.count; ++source) {
        float sum = 0.0;
        for (uint j = lane; j < p.width; j += 128) sum += load_source(source, offset + j);
        float mean = reduce_sum(sum) / float(p.width);
        float squares = 0.0;
        for (uint j = lane; j < p.width; j += 128) { float d = load_source(source, offset + j) - mean; squares += d * d; }
        float inverse = inversesqrt(reduce_sum(squares) / float(p.width) + p.epsilon);
        if (lane == 0u) { means[source] = mean; inverses[source] = inverse; }
    }
    barrier();
    uint w = p.width;
    for (uint j = lane; j < w; j += 128) {
        float y = base_data[offset + j];
        float normed_base = (y - means[0]) * inverses[0] * parameter[5u * w + j] + parameter[6u * w + j];
        float weight_base = parameter[j], weight_lora = parameter[w + j], weight_cross = parameter[2u * w + j];
        float weight_out = parameter[3u * w + j], bias = parameter[4u * w + j];
        float norm_weight = parameter[7u * w + j], norm_bias = parameter[8u * w + j];
        float result = y;
        for (uint i = 0; i < p.count; ++i) {
            float d = load_lora(i, offset + j);
            float normed = (d - means[i + 1u]) * inverses[i + 1u] * norm_weight + norm_bias;
            float logit = weight_base * normed_base + weight_lora * normed + weight_cross * normed_base * normed + bias;
            result += weight_out * d / (1.0 + exp(-logit));
        }
        out_data[offset + j] = result;
    }
}
