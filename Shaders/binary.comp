#version 450
// out = a ∘ b (add, sub, mul, div) with numpy broadcasting: the host pads shapes to rank 6
// and gives each operand's element strides, 0 along broadcast axes.
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer ABuffer { float a_data[]; };
layout(std430, binding = 1) readonly buffer BBuffer { float b_data[]; };
layout(std430, binding = 2) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint count;
    uint op;            // BINARY_*
    uint dims[6];       // output shape, outermost first
    uint a_strides[6];
    uint b_strides[6];
} p;

void main() {
    uint index = flat_invocation();
    if (index >= p.count) return;
    uint remainder = index, a_index = 0, b_index = 0;
    [[unroll]] for (int axis = 5; axis >= 0; --axis) {
        uint position = remainder % p.dims[axis];
        remainder /= p.dims[axis];
        a_index += position * p.a_strides[axis];
        b_index += position * p.b_strides[axis];
    }
    float x = a_data[a_index], y = b_data[b_index];
    float result;
    switch (p.op) {
        case BINARY_ADD: result = x + y; break;
        case BINARY_SUB: result = x - y; break;
        case BINARY_MUL: result = x * y; break;
        default: result = x / y; break;  // BINARY_DIV
    }
    out_data[index] = result;
}
