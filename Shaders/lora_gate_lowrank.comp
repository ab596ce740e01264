#version 450
// AutoLoRA's fused LoRA gate with the LoRA outputs formed inside (Op.lowRankGate), one
// workgroup per token row: dᵢ[j] = Σₖ u[offᵢ + k]·up[j, offᵢ + k] over LoRA i's Rᵢ columns,
//   gᵢ = σ(w_base⊙LN_base(y₀) + w_lora⊙LN_lora(dᵢ) + w_cross⊙LN_base(y₀)⊙LN_lora(dᵢ) + bias)
//   out = y₀ + Σᵢ w_out⊙gᵢ⊙dᵢ
// dᵢ is recomputed in each of the three passes (mean, centred variance, output) instead of
// being stored: Rᵢ multiply-adds per element against a full row of memory traffic.
layout(local_size_x = 128) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer BaseBuffer { float base_data[]; };
// Rows: weight_base, weight_lora, weight_cross, weight_out, bias, norm_base (weight, bias),
// norm_lora (weight, bias); each `width` long.
layout(std430, binding = 1) readonly buffer ParameterBuffer { float parameter[]; };
layout(std430, binding = 2) readonly buffer LowRankBuffer { float u_data[]; };   // [rows, total]
layout(std430, binding = 3) readonly buffer UpBuffer { float up_data[]; };       // [width, total]
layout(std430, binding = 4) writeonly buffer OutBuffer { float out_data[]; };

const uint MAX_LORAS = 8;
layout(push_constant) uniform Parameters {
    uint rows;
    uint width;
    uint count;   // LoRAs, 1…8
    float epsilon;
    uint total;   // Σ ranks
    uint offsets[MAX_LORAS + 1];  // first column of each LoRA in u and up; offsets[count] = total
} p;

shared float partial[128];
shared float means[MAX_LORAS + 1];
shared float inverses[MAX_LORAS + 1];

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

// Source 0 is y₀, source i + 1 is dᵢ.
float load_source(uint source, uint row, uint column) {
    if (source == 0u) return base_data[row * p.width + column];
    uint first = p.offsets[source - 1u], last = p.offsets[source];
    float sum = 0.0;
    for (uint k = first; k < last; ++k) sum += u_data[row * p.total + k] * up_data[column * p.total + k];
    return sum;
}

void main() {
    uint row = flat_workgroup();
    if (row >= p.rows) return;  // uniform per workgroup, so barriers stay legal
    uint lane = gl_LocalInvocationID.x;
    for (uint source = 0; source <= p.count; ++source) {
        float sum = 0.0;
        for (uint j = lane; j < p.width; j += 128) sum += load_source(source, row, j);
        float mean = reduce_sum(sum) / float(p.width);
        float squares = 0.0;
        for (uint j = lane; j < p.width; j += 128) { float d = load_source(source, row, j) - mean; squares += d * d; }
        float inverse = inversesqrt(reduce_sum(squares) / float(p.width) + p.epsilon);
        if (lane == 0u) { means[source] = mean; inverses[source] = inverse; }
    }
    barrier();
    uint w = p.width;
    uint offset = row * w;
    for (uint j = lane; j < w; j += 128) {
        float y = base_data[offset + j];
        float normed_base = (y - means[0]) * inverses[0] * parameter[5u * w + j] + parameter[6u * w + j];
        float weight_base = parameter[j], weight_lora = parameter[w + j], weight_cross = parameter[2u * w + j];
        float weight_out = parameter[3u * w + j], bias = parameter[4u * w + j];
        float norm_weight = parameter[7u * w + j], norm_bias = parameter[8u * w + j];
        float result = y;
        for (uint i = 0; i < p.count; ++i) {
            float d = load_source(i + 1u, row, j);
            float normed = (d - means[i + 1u]) * inverses[i + 1u] * norm_weight + norm_bias;
            float logit = weight_base * normed_base + weight_lora * normed + weight_cross * normed_base * normed + bias;
            result += weight_out * d / (1.0 + exp(-logit));
        }
        out_data[offset + j] = result;
    }
}
