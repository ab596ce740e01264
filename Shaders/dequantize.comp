#version 450
// out[i] = element i of a GGUF block-quantized tensor, widened to float32 (a cast from a
// block type: merging a LoRA onto a quantized base reads the base this way). The blocks are
// read by weight_blocks.glsl's `load_b`, the matmul's own loader (define B_Q8_0 … B_Q6_K).
layout(local_size_x = 256) in;
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#define WEIGHT_BINDING 0
#include "weight_load.glsl"
layout(std430, binding = 1) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint count;  // elements
} p;

void main() {
    uint index = flat_invocation();
    if (index >= p.count) return;
    out_data[index] = load_b(index);
}
