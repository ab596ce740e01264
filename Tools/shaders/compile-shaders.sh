#!/usr/bin/env bash
# Compiles Shaders/*.comp to the SPIR-V the Vulkan backend loads (Backends/Vulkan/SPIRV/),
# one file per variant, and validates each with spirv-val. The .spv files are committed;
# ShaderBuildTests recompiles them and fails if any differs from its source.
#   usage: Tools/shaders/compile-shaders.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-Backends/Vulkan/SPIRV}"
mkdir -p "$out"

compile() {  # name source [defines...]
    local name="$1" source="$2"
    shift 2
    glslangValidator -V --target-env vulkan1.1 -IShaders "$@" "Shaders/$source" -o "$out/$name.spv" > /dev/null
    spirv-val --target-env vulkan1.1 "$out/$name.spv"
}

for dtype in f32 f16 bf16; do
    upper=$(echo "$dtype" | tr a-z A-Z)
    compile "matmul_$dtype" matmul.comp "-DB_$upper"
    compile "matmul_tiled_$dtype" matmul.comp "-DB_$upper" -DTILED
    compile "matmul_vec4_$dtype" matmul_vec4.comp "-DB_$upper"
    compile "matmul_texel_$dtype" matmul_vec4.comp "-DB_$upper" -DTEXEL
    compile "conv2d_$dtype" conv2d.comp "-DB_$upper"
    compile "lora_update_$dtype" lora_update.comp "-DF_$upper"
    compile "lora_update_vec4_$dtype" lora_update_vec4.comp "-DF_$upper"
done
# float8 weights (ComfyUI's fp8 checkpoints): matmul and conv2d; LoRA factors stay F32/F16/BF16.
for dtype in f8e4m3 f8e5m2; do
    upper=$(echo "$dtype" | tr a-z A-Z)
    compile "matmul_$dtype" matmul.comp "-DB_$upper"
    compile "matmul_tiled_$dtype" matmul.comp "-DB_$upper" -DTILED
    compile "matmul_vec4_$dtype" matmul_vec4.comp "-DB_$upper"
    compile "matmul_texel_$dtype" matmul_vec4.comp "-DB_$upper" -DTEXEL
    compile "conv2d_$dtype" conv2d.comp "-DB_$upper"
done
compile attention_texel attention_registers.comp -DTEXEL
for shader in binary unary rowwise rope attention attention_registers copy convert topk_histogram topk_sum topk_control lora_gate lora_gate_lowrank; do
    compile "$shader" "$shader.comp"
done
