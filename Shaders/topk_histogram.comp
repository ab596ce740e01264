#version 450
// One pass of an exact radix select of the K largest |x| (K-LoRA's Top-K): the bits of a
// non-negative float order like the float, so the K-th largest magnitude is found 8 bits
// at a time, high byte first. This pass counts, among the elements whose higher bytes
// match the prefix chosen so far, how many fall in each of the 256 values of the byte at
// `shift`; topk_control.comp then picks the byte. Counts go to shared memory first, then
// one atomic add per bin per workgroup into the global histogram.
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer XBuffer { float x_data[]; };
layout(std430, binding = 1) buffer HistogramBuffer { uint histogram[256]; };
layout(std430, binding = 2) readonly buffer StateBuffer { uint prefix; uint mask; uint remaining; uint unused; } state;

layout(push_constant) uniform Parameters {
    uint count;   // elements in this window
    uint offset;  // element offset of the first one
    uint shift;   // 24, 16, 8, 0
} p;

shared uint local_histogram[256];

void main() {
    uint lane = gl_LocalInvocationID.x;
    local_histogram[lane] = 0u;
    barrier();
    uint prefix = state.prefix, mask = state.mask;
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    for (uint i = flat_invocation(); i < p.count; i += stride) {
        uint key = floatBitsToUint(abs(x_data[p.offset + i]));
        if ((key & mask) == prefix) atomicAdd(local_histogram[(key >> p.shift) & 255u], 1u);
    }
    barrier();
    uint counted = local_histogram[lane];
    if (counted != 0u) atomicAdd(histogram[lane], counted);
}
