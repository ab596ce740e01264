// The weight operand of matmul and conv2d, in one of the weight types (define B_F32,
// B_F16, B_BF16, B_F8E4M3 or B_F8E5M2, or a GGUF block type B_Q8_0 … B_Q6_K: see
// weight_blocks.glsl) at binding WEIGHT_BINDING; `load_b(i)` widens element i to float32.
// Narrow types are packed in 32-bit words, element 0 lowest.
#if defined(B_Q4_0) || defined(B_Q4_1) || defined(B_Q5_0) || defined(B_Q5_1) || defined(B_Q8_0) || \
    defined(B_Q2_K) || defined(B_Q3_K) || defined(B_Q4_K) || defined(B_Q5_K) || defined(B_Q6_K)
#include "weight_blocks.glsl"
#elif defined(B_F32)
layout(std430, binding = WEIGHT_BINDING) readonly buffer BBuffer { float b_data[]; };
float load_b(uint index) { return b_data[index]; }
#elif defined(B_F16)
layout(std430, binding = WEIGHT_BINDING) readonly buffer BBuffer { uint b_words[]; };
float load_b(uint index) { return half_at(b_words[index >> 1], index & 1u); }
#elif defined(B_F8E4M3)
layout(std430, binding = WEIGHT_BINDING) readonly buffer BBuffer { uint b_words[]; };
float load_b(uint index) { return fp8e4m3_at(b_words[index >> 2], index & 3u); }
#elif defined(B_F8E5M2)
layout(std430, binding = WEIGHT_BINDING) readonly buffer BBuffer { uint b_words[]; };
float load_b(uint index) { return fp8e5m2_at(b_words[index >> 2], index & 3u); }
#else
layout(std430, binding = WEIGHT_BINDING) readonly buffer BBuffer { uint b_words[]; };
float load_b(uint index) { return bfloat_at(b_words[index >> 1], index & 1u); }
#endif
