#version 450
// 2-D convolution, stride 1, zero padding, as an implicit GEMM: out[b, o, y, x] =
// bias[o] + Σ_{c,ky,kx} w[o, c, ky, kx] · x[b, c, y + ky − pad, x + kx − pad]. Each
// invocation keeps TM output channels × TN output pixels in registers; the image
// columns are gathered on the fly (no im2col buffer). Weights in any weight type
// (weight_load.glsl), float32 accumulation.
layout(local_size_x = 8, local_size_y = 8, local_size_z = 1) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint TM = 4;
layout(constant_id = 1) const uint TN = 4;

layout(std430, binding = 0) readonly buffer XBuffer { float x_data[]; };
#define WEIGHT_BINDING 1
#include "weight_load.glsl"
layout(std430, binding = 2) readonly buffer BiasBuffer { float bias_data[]; };
layout(std430, binding = 3) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint channels, height, width;
    uint outputs, out_height, out_width;
    uint kh, kw, padding, has_bias;
} p;

void main() {
    uint batch = gl_WorkGroupID.z;
    uint pixels = p.out_height * p.out_width;
    uint pixel0 = gl_GlobalInvocationID.x * TN;
    uint output0 = gl_GlobalInvocationID.y * TM;
    if (pixel0 >= pixels || output0 >= p.outputs) return;

    int py[TN];
    int px[TN];
    [[unroll]] for (uint j = 0; j < TN; ++j) {
        uint pixel = min(pixel0 + j, pixels - 1);
        py[j] = int(pixel / p.out_width) - int(p.padding);
        px[j] = int(pixel % p.out_width) - int(p.padding);
    }
    uint weight_rows[TM];
    uint depth = p.channels * p.kh * p.kw;
    [[unroll]] for (uint i = 0; i < TM; ++i) weight_rows[i] = min(output0 + i, p.outputs - 1) * depth;
    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

    uint image = batch * p.channels * p.height * p.width;
    for (uint c = 0; c < p.channels; ++c) {
        uint plane = image + c * p.height * p.width;
        for (uint ky = 0; ky < p.kh; ++ky) {
            for (uint kx = 0; kx < p.kw; ++kx) {
                float xv[TN];
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    int iy = py[j] + int(ky), ix = px[j] + int(kx);
                    bool inside = iy >= 0 && iy < int(p.height) && ix >= 0 && ix < int(p.width);
                    xv[j] = inside ? x_data[plane + uint(iy) * p.width + uint(ix)] : 0.0;
                }
                uint k = (c * p.kh + ky) * p.kw + kx;
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    float w = load_b(weight_rows[i] + k);
                    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = fma(w, xv[j], acc[i][j]);
                }
            }
        }
    }
    uint result = batch * p.outputs * pixels;
    [[unroll]] for (uint i = 0; i < TM; ++i) {
        uint o = output0 + i;
        if (o >= p.outputs) break;
        float bias = p.has_bias != 0u ? bias_data[o] : 0.0;
        [[unroll]] for (uint j = 0; j < TN; ++j) {
            uint pixel = pixel0 + j;
            if (pixel < pixels) out_data[result + o * pixels + pixel] = acc[i][j] + bias;
        }
    }
}
