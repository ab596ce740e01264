#version 450
// Strided copy of 32-bit elements over a rank-6 iteration space: permute (input strides
// reordered), slice (input offset), concat (output offset and strides of the whole).
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer InBuffer { uint in_data[]; };
layout(std430, binding = 1) buffer OutBuffer { uint out_data[]; };

layout(push_constant) uniform Parameters {
    uint count;
    uint in_offset;
    uint out_offset;
    uint dims[6];
    uint in_strides[6];
    uint out_strides[6];
} p;

void main() {
    uint index = flat_invocation();
    if (index >= p.count) return;
    uint remainder = index, source = p.in_offset, target = p.out_offset;
    [[unroll]] for (int axis = 5; axis >= 0; --axis) {
        uint position = remainder % p.dims[axis];
        remainder /= p.dims[axis];
        source += position * p.in_strides[axis];
        target += position * p.out_strides[axis];
    }
    out_data[target] = in_data[source];
}
