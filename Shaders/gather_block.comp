#version 450
// Embedding rows of a GGUF block-quantized table [V, D] (define B_Q4_0 … B_Q6_K; D whole
// blocks), dequantized as they are gathered: out[t, c] = table[ids[t], c] for the ids inside
// the bound window of rows row_start ..< row_start + row_count (tables past the binding limit
// are gathered a window at a time; other ids are left to other windows). Ids are range-checked
// on the host.
layout(local_size_x = 256) in;
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#define WEIGHT_BINDING 0
#include "weight_load.glsl"
layout(std430, binding = 1) readonly buffer IdBuffer { uint id_words[]; };
layout(std430, binding = 2) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint count;      // output elements
    uint width;      // D
    uint id_dtype;   // DTYPE_I32 or DTYPE_I64
    uint row_start;
    uint row_count;
} p;

void main() {
    uint index = flat_invocation();
    if (index >= p.count) return;
    uint token = index / p.width, column = index % p.width;
    uint id = p.id_dtype == DTYPE_I64 ? id_words[2 * token] : id_words[token];
    if (id < p.row_start || id - p.row_start >= p.row_count) return;
    out_data[index] = load_b((id - p.row_start) * p.width + column);
}
