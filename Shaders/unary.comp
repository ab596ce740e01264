#version 450
// Element-wise activations and scaling. GLSL has no erf, so exact GELU uses an erf with
// |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), far inside the 1e-4 tolerance.
layout(local_size_x = 256) in;
// common.glsl reads gl_WorkGroupSize, so it is included after the size is declared.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer InBuffer { float in_data[]; };
layout(std430, binding = 1) writeonly buffer OutBuffer { float out_data[]; };

layout(push_constant) uniform Parameters {
    uint count;
    uint function;  // UNARY_*
    float factor;
} p;

float erf_approx(float x) {
    float z = abs(x);
    float t = 1.0 / (1.0 + 0.5 * z);
    float r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
              t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
              t * (-0.82215223 + t * 0.17087277)))))))));
    return x >= 0.0 ? 1.0 - r : r - 1.0;
}

// tanh that stays finite for large |x| (some drivers compute it through exp overflow). GLSL
// leaves clamp, min and max of a NaN undefined, so a NaN is passed through first.
float safe_tanh(float x) { return isnan(x) ? x : tanh(clamp(x, -15.0, 15.0)); }

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

void main() {
    uint index = flat_invocation();
    if (index >= p.count) return;
    float v = in_data[index];
    float result;
    switch (p.function) {
        case UNARY_GELU: result = 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752)); break;
        // 0.5·v·(1 + tanh(u)) = v·sigmoid(2u): no cancellation in 1 + tanh(u) for negative v.
        case UNARY_GELU_TANH: result = v / (1.0 + exp(-1.5957691216057308 * (v + 0.044715 * v * v * v))); break;
        case UNARY_QUICK_GELU: result = v * sigmoid(1.702 * v); break;
        case UNARY_SILU: result = v * sigmoid(v); break;
        case UNARY_SIGMOID: result = sigmoid(v); break;
        case UNARY_RELU: result = v < 0.0 ? 0.0 : v; break;  // not max(): NaN stays NaN
        case UNARY_TANH: result = safe_tanh(v); break;
        default: result = v * p.factor; break;  // UNARY_SCALE
    }
    out_data[index] = result;
}
