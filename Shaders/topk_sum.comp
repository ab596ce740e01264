#version 450
// Last pass of the Top-K |x| selection: with the K-th largest magnitude's bits known
// (state.prefix), each workgroup sums the magnitudes strictly above it and all
// magnitudes, and writes the two partial sums; topk_control.comp adds them up.
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer XBuffer { float x_data[]; };
layout(std430, binding = 1) readonly buffer StateBuffer { uint prefix; uint mask; uint remaining; uint unused; } state;
layout(std430, binding = 2) writeonly buffer PartialBuffer { vec2 partials[]; };  // (above, all) per workgroup

layout(push_constant) uniform Parameters {
    uint count;
    uint offset;
    uint partial_offset;  // index of this window's first workgroup in partials
} p;

shared vec2 sums[256];

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint threshold = state.prefix;
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    vec2 sum = vec2(0.0);
    for (uint i = flat_invocation(); i < p.count; i += stride) {
        float magnitude = abs(x_data[p.offset + i]);
        sum += vec2(floatBitsToUint(magnitude) > threshold ? magnitude : 0.0, magnitude);
    }
    sums[lane] = sum;
    barrier();
    for (uint half_size = 128u; half_size > 0u; half_size >>= 1) {
        if (lane < half_size) sums[lane] += sums[lane + half_size];
        barrier();
    }
    if (lane == 0u) partials[p.partial_offset + flat_workgroup()] = sums[0];
}
