#version 450
// The serial steps of the Top-K |x| selection, one workgroup:
//  TOPK_CONTROL_CLEAR: clear the histogram, state = (prefix 0, mask 0, remaining K);
//  TOPK_CONTROL_SELECT: after a histogram pass at `shift`, walk the bins from the top until `remaining`
//          elements are covered, fix that byte into the prefix, count out the elements
//          above it, and clear the histogram for the next pass;
//  TOPK_CONTROL_FINISH: add the partial sums: out = [Σ above the K-th + remaining · K-th, Σ all].
// After four passes the prefix is the K-th largest magnitude's bits exactly, and
// `remaining` says how many of the elements equal to it belong to the top K (ties).
layout(local_size_x = 256) in;
#extension GL_GOOGLE_include_directive : require
#include "kernel_codes.glsl"

layout(std430, binding = 0) buffer HistogramBuffer { uint histogram[256]; };
layout(std430, binding = 1) buffer StateBuffer { uint prefix; uint mask; uint remaining; uint unused; } state;
layout(std430, binding = 2) readonly buffer PartialBuffer { vec2 partials[]; };
layout(std430, binding = 3) writeonly buffer OutBuffer { float out_data[2]; };

layout(push_constant) uniform Parameters {
    uint mode;
    uint k;
    uint shift;
    uint partial_count;
} p;

shared vec2 sums[256];

void main() {
    uint lane = gl_LocalInvocationID.x;
    if (p.mode == TOPK_CONTROL_CLEAR) {
        histogram[lane] = 0u;
        if (lane == 0u) { state.prefix = 0u; state.mask = 0u; state.remaining = p.k; }
        return;
    }
    if (p.mode == TOPK_CONTROL_SELECT) {
        if (lane == 0u) {
            uint remaining = state.remaining, above = 0u, chosen = 0u;
            for (int bin = 255; bin >= 0; --bin) {
                uint counted = histogram[bin];
                if (above + counted >= remaining) { chosen = uint(bin); break; }
                above += counted;
            }
            state.remaining = remaining - above;
            state.prefix |= chosen << p.shift;
            state.mask |= 255u << p.shift;
        }
        memoryBarrierBuffer();
        barrier();
        histogram[lane] = 0u;
        return;
    }
    vec2 sum = vec2(0.0);
    for (uint i = lane; i < p.partial_count; i += 256u) sum += partials[i];
    sums[lane] = sum;
    barrier();
    for (uint half_size = 128u; half_size > 0u; half_size >>= 1) {
        if (lane < half_size) sums[lane] += sums[lane + half_size];
        barrier();
    }
    if (lane == 0u) {
        out_data[0] = sums[0].x + float(state.remaining) * uintBitsToFloat(state.prefix);
        out_data[1] = sums[0].y;
    }
}
