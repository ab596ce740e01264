// The weight operand of the texel matmuls, bound at binding WEIGHT_BINDING as a uniform
// texel buffer of 4-element texels along K (define B_F32, B_F16, B_BF16, B_F8E4M3 or
// B_F8E5M2): RGBA32F, RGBA16F (the fetch widens the halves), RG32UI (4 bfloat16) or
// R32UI (4 float8). `load_b4(i)` returns texel i — 4 consecutive k — as float32.
#if defined(B_F32) || defined(B_F16)
layout(binding = WEIGHT_BINDING) uniform samplerBuffer b_texels;
vec4 load_b4(uint index4) { return texelFetch(b_texels, int(index4)); }
#elif defined(B_F8E4M3)
layout(binding = WEIGHT_BINDING) uniform usamplerBuffer b_texels;
vec4 load_b4(uint index4) { return fp8e4m3_word(texelFetch(b_texels, int(index4)).x); }
#elif defined(B_F8E5M2)
layout(binding = WEIGHT_BINDING) uniform usamplerBuffer b_texels;
vec4 load_b4(uint index4) { return fp8e5m2_word(texelFetch(b_texels, int(index4)).x); }
#else
layout(binding = WEIGHT_BINDING) uniform usamplerBuffer b_texels;
vec4 load_b4(uint index4) { return bfloat_words(texelFetch(b_texels, int(index4)).xy); }
#endif
