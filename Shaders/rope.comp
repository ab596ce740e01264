#version 450
// FLUX rotary embedding on x [B, L, H, D]: pair (x[2i], x[2i+1]) of every head at
// position l is rotated by (cos, sin)[l, i].
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer XBuffer { float x[]; };
layout(std430, binding = 1) readonly buffer CosBuffer { float cos_table[]; };
layout(std430, binding = 2) readonly buffer SinBuffer { float sin_table[]; };
layout(std430, binding = 3) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint pairs;   // B·L·H·D/2
    uint sequence_length;
    uint heads;
    uint half_dim;
} p;

void main() {
    uint index = flat_invocation();
    if (index >= p.pairs) return;
    uint i = index % p.half_dim;
    uint position = (index / (p.half_dim * p.heads)) % p.sequence_length;
    float c = cos_table[position * p.half_dim + i], s = sin_table[position * p.half_dim + i];
    float a = x[2 * index], b = x[2 * index + 1];
    out_data[2 * index] = a * c - b * s;
    out_data[2 * index + 1] = b * c + a * s;
}
