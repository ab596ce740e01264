#!/usr/bin/env bash
# Runs the Vulkan tests and commands under Khronos validation with synchronization
# validation (Debian's vulkan-validationlayers) and fails on any validation message.
# The layer writes its messages to stdout; this script keeps every line and greps them.
#   usage: Tools/vulkan-validation.sh   (after a debug build with tests: swift build --build-tests)
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/setup/system-packages.sh
lorafuse_require_packages "to run the Vulkan tests under the validation layers" \
    "${LORAFUSE_BUILD_PACKAGES[@]}" "${LORAFUSE_TEST_PACKAGES[@]}"
export VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation
export VK_LAYER_ENABLES=VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The layer must really be there: the loader says so when asked.
VK_LOADER_DEBUG=layer swift run lorafuse backends >"$log" 2>&1 || status=$?
grep -q 'Insert instance layer "VK_LAYER_KHRONOS_validation"' "$log" || { cat "$log"; echo "validation: the layer did not load"; exit 1; }
{
    swift run lorafuse parity-ops --backend vulkan
    swift run lorafuse dit --backend vulkan --model Tests/Fixtures/flux/dev-tiny --inputs Tests/Fixtures/flux/dev-tiny/inputs.safetensors \
        --lora Tests/Fixtures/lora/all.peft.safetensors:0.7 --lora Tests/Fixtures/lora/partial.peft.safetensors:-1.3
    LORAFUSE_VULKAN_DISABLE_OPS=attention,lowRankUpdate swift run lorafuse dit --backend vulkan --model Tests/Fixtures/flux/dev-tiny \
        --inputs Tests/Fixtures/flux/dev-tiny/inputs.safetensors --lora Tests/Fixtures/lora/all.peft.safetensors
    swift test --skip-build --filter 'OpParityTests|SchedulerTests|BackendBehaviourTests|VulkanLimitsTests|LoRAApplicationTests|AutoLoRATests|FluxTransformerTests|StreamingTests|QuantizedMatmulTests'
} >"$log" 2>&1 || status=$?
if grep -E 'Validation (Error|Warning|Performance Warning)|VUID-|SYNC-HAZARD' "$log" | head -20; then
    echo "validation: the layers reported the messages above"
    exit 1
fi
tail -3 "$log"
if [ "$status" -ne 0 ]; then cat "$log" | tail -40; echo "validation: a command failed ($status)"; exit "$status"; fi
echo "validation: no messages"
