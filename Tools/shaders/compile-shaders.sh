#!/usr/bin/env bash
# Compiles every kernel variant listed in Shaders/kernels.json to the SPIR-V the Vulkan
# backend loads (Backends/Vulkan/SPIRV/), validates each with spirv-val, and regenerates
# Shaders/generated/kernel_codes.glsl and Backends/Vulkan/Sources/Generated/VulkanKernel.swift
# (the kernel enum and typed push constants, read back from the SPIR-V). All of these are
# committed; ShaderBuildTests regenerates them into a scratch folder and fails on any
# difference. Needs glslang-tools and spirv-tools (Tools/setup/system-packages.sh).
#   usage: Tools/shaders/compile-shaders.sh [OUTPUT_ROOT]   (default: the repository)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
output="${1:-$root}"
swift build --product vulkan-shaders-gen >&2
"$(swift build --show-bin-path)/vulkan-shaders-gen" --root "$root" --output "$output"
