#!/usr/bin/env bash
# Second half of the GPU check (first half: gpu-check-prepare.sh): runs on the GPU machine
# with .gpu-check carried, no Swift needed. Runs parity-ops on Vulkan, the DiT parity against
# the CPU backend (also with attention and the LoRA update forced off Vulkan: the scheduler's
# fallback), GGUF Q8_0 and fp8 DiT parity, a forward streamed under a tiny device budget, a
# LoRA DiT forward, generation on both backends (latents compared), the matmul (F32, BF16, fp8,
# Q8_0, Q4_K) and attention profiles at FLUX shapes, and, where torch is installed, FLUX.1-dev
# at full size resident and streamed; writes $OUT/summary.json and the raw logs.
# GPU_CHECK_SMALL=1 shrinks the profiles (for proving the script on lavapipe).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/gpu-check-out}"
mkdir -p "$out"
here=.gpu-check
if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in "$here"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export LD_LIBRARY_PATH="$PWD/$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
lf=/tmp/gpu-check-bin/lorafuse
mkdir -p /tmp/gpu-check-bin
cp -R "$here/bin/LoRAFuse_LoRAFuseVulkan.resources" /tmp/gpu-check-bin/
xz -dc "$here/bin/lorafuse.xz" >"$lf" && chmod +x "$lf"  # always this build's binary, never one left from an earlier check
fx="$here/fixtures"
results=()
step() {  # name command...
    local name="$1"; shift
    local start=$(date +%s.%N)
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    local seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    echo "$name: rc $rc, ${seconds}s"
    results+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $seconds}")
}
step backends "$lf" backends --json
step parity_ops "$lf" parity-ops --backend vulkan --json
step dit_parity "$lf" parity --backend vulkan --against cpu --model "$fx/dev-tiny" --inputs "$fx/dev-tiny/inputs.safetensors" \
    --lora "$fx/all.peft.safetensors:0.7" --show failures
step dit_parity_fallback env LORAFUSE_VULKAN_DISABLE_OPS=attention,lowRankUpdate "$lf" parity --backend vulkan --against cpu \
    --model "$fx/dev-tiny" --inputs "$fx/dev-tiny/inputs.safetensors" --lora "$fx/all.peft.safetensors:0.7" --show failures
step dit_lora "$lf" dit --backend vulkan --model "$fx/dev-tiny" --inputs "$fx/dev-tiny/inputs.safetensors" \
    --lora "$fx/all.peft.safetensors:0.7" --lora "$fx/partial.peft.safetensors:-1.3" --repeat 5 --json
# Quantized weights (GGUF Q8_0, fp8) against the CPU backend, and a forward streamed through a
# device budget far below the model (the output must match the all-resident one, see the JSON).
step dit_parity_gguf_q8_0 "$lf" parity --backend vulkan --against cpu --model "$fx/dev-tiny/gguf/q8_0.gguf" \
    --inputs "$fx/dev-tiny/inputs.safetensors" --show failures
step dit_parity_fp8 "$lf" parity --backend vulkan --against cpu --model "$fx/dev-tiny/fp8/e4m3.safetensors" \
    --inputs "$fx/dev-tiny/inputs.safetensors" --lora "$fx/all.peft.safetensors:0.7" --show failures
step dit_streamed "$lf" dit --backend vulkan --model "$fx/dev-tiny/fp8/e4m3.safetensors" --inputs "$fx/dev-tiny/inputs.safetensors" \
    --max-device-memory 140KiB --output "$out/streamed.safetensors" --json
# The same with the copies in the compute submissions instead of on the transfer queue.
step dit_streamed_no_transfer_queue env LORAFUSE_VULKAN_TRANSFER_QUEUE=off "$lf" dit --backend vulkan \
    --model "$fx/dev-tiny/fp8/e4m3.safetensors" --inputs "$fx/dev-tiny/inputs.safetensors" \
    --max-device-memory 140KiB --output "$out/streamed-no-transfer-queue.safetensors" --json
step dit_resident "$lf" dit --backend vulkan --model "$fx/dev-tiny/fp8/e4m3.safetensors" --inputs "$fx/dev-tiny/inputs.safetensors" \
    --output "$out/resident.safetensors" --json
step dit_streamed_equals_resident python3 - "$out/streamed.safetensors" "$out/resident.safetensors" \
    "$out/streamed-no-transfer-queue.safetensors" <<'PY'
import sys
# The same kernels in the same order, the same metadata: the files must be byte-identical.
files = [open(path, "rb").read() for path in sys.argv[1:]]
same = all(data == files[0] for data in files)
print("identical" if same else "different")
sys.exit(0 if same else 1)
PY
for backend in cpu vulkan; do
    step "generate_$backend" "$lf" generate --model "$fx/flux-tiny" --prompt "a photo of a cat" --width 48 --height 32 --steps 4 \
        --max-sequence-length 48 --noise "$fx/generate-dev.safetensors" --output "$out/generate-$backend.png" \
        --output-latents "$out/latents-$backend.safetensors" --backend "$backend" --json
done
step generate_parity python3 - "$out/latents-cpu.safetensors" "$out/latents-vulkan.safetensors" <<'PY'
import json, struct, sys, array
def read(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    info = header["latents"]
    start, end = info["data_offsets"]
    values = array.array("f"); values.frombytes(data[8 + n + start:8 + n + end])
    return values
a, b = read(sys.argv[1]), read(sys.argv[2])
err = max(abs(x - y) for x, y in zip(a, b)) / max(abs(y) for y in b)
print(json.dumps({"latents_relative_error": err}))
sys.exit(0 if err <= 1e-3 else 1)
PY
if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then shapes=("512 768 768"); tokens=512; else shapes=("4096 3072 3072" "4608 3072 12288" "4608 12288 3072"); tokens=4608; fi
index=0
for shape in "${shapes[@]}"; do
    read -r m n k <<<"$shape"
    for dtype in f32 bf16 f8_e4m3 q8_0 q4_k; do
        step "matmul_${index}_$dtype" "$lf" profile matmul --backend vulkan --m "$m" --n "$n" --k "$k" --dtype "$dtype" --repeat 5 --json
    done
    index=$((index + 1))
done
# FLUX.1-dev at full size, where the machine has torch to write the 11.9 GB fp8 file
# (Tools/bench/make_flux_dev_file.py): all resident, then streamed through an 8 GiB budget.
if [ "${GPU_CHECK_SMALL:-0}" != 1 ] && python3 -c "import torch, numpy" 2>/dev/null; then
    full=/tmp/gpu-check-full
    mkdir -p "$full"
    step full_write python3 Tools/bench/make_flux_dev_file.py "$full/flux1-dev-fp8.safetensors" --inputs "$full/inputs.safetensors"
    step full_dit_resident "$lf" dit --backend vulkan --model "$full/flux1-dev-fp8.safetensors" --inputs "$full/inputs.safetensors" \
        --max-device-memory 64GiB --repeat 2 --json
    step full_dit_streamed "$lf" dit --backend vulkan --model "$full/flux1-dev-fp8.safetensors" --inputs "$full/inputs.safetensors" \
        --max-device-memory 8GiB --repeat 2 --json
    step full_dit_streamed_no_transfer_queue env LORAFUSE_VULKAN_TRANSFER_QUEUE=off "$lf" dit --backend vulkan \
        --model "$full/flux1-dev-fp8.safetensors" --inputs "$full/inputs.safetensors" --max-device-memory 8GiB --repeat 2 --json
    rm -rf "$full"
else
    echo "full-size steps skipped (GPU_CHECK_SMALL, or no torch on this machine)"
fi
step attention "$lf" profile attention --backend vulkan --tokens "$tokens" --heads 24 --head-dim 128 --repeat 5 --json
{
    echo "{\"steps\": [$(IFS=,; echo "${results[*]}")],"
    echo " \"logs\": {"
    first=1
    for log in "$out"/*.log; do
        name=$(basename "$log" .log)
        [ $first = 1 ] || echo ","
        first=0
        printf '  "%s": %s' "$name" "$(tail -c 20000 "$log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
    done
    echo "}}"
} >"$out/summary.json"
echo "gpu-check: summary in $out/summary.json"
