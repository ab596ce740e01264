#!/usr/bin/env bash
# AutoLoRA costs, one run:
#  1. the fused LoRA gate against the same math as separate ops (`lorafuse profile gate`),
#     4096 tokens x 3072 wide, N = 2 and 4, on the CPU backend and on Vulkan;
#  2. a forward of the mid-size model of flux-benchmark.sh with --fusion autolora and two
#     rank-16 LoRAs against hot application of the same two LoRAs (the anchor); the modes
#     alternate twice, best of REPEAT each. Merger weights are random (make_bench_mergers.py).
#   usage: Tools/bench/autolora-benchmark.sh [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-3}"
work=.build-bench/autolora
mid=.build-bench/flux-mid
mkdir -p "$work"
if [ ! -f "$mid/transformer/config.json" ]; then python3 Tools/bench/flux_pytorch.py "$mid" --repeat 1 > /dev/null; fi
[ -f "$work/mergers.safetensors" ] || python3 Tools/bench/make_bench_mergers.py "$mid/transformer" "$work/mergers.safetensors"
for seed in 3 4; do
    [ -f "$work/lora-$seed.safetensors" ] || python3 Tools/bench/make_bench_lora.py "$mid/transformer" "$work/lora-$seed.safetensors" --seed "$seed"
done
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
backends="cpu"
if "$bin" backends --json | grep -q '"available":true,"backend":"vulkan"'; then backends="cpu vulkan"; fi
for backend in $backends; do
    for n in 2 4; do "$bin" profile gate --tokens 4096 --width 3072 --loras "$n" --backend "$backend" --repeat 2; done
done
# The gate that forms dᵢ itself (lowRankGate) against dᵢ as matmuls, then the gate (CPU).
for n in 2 4; do "$bin" profile gate --tokens 1024 --width 4096 --loras "$n" --rank 16 --repeat 3 | tail -1; done
results=$(mktemp)
common=(dit --model "$mid" --inputs "$mid/inputs.safetensors" --repeat "$repeat" --json --lora "$work/lora-3.safetensors" --lora "$work/lora-4.safetensors")
for _ in 1 2; do
    "$bin" "${common[@]}" | sed 's/"command":"dit"/"command":"hot"/' >> "$results"
    "$bin" "${common[@]}" --fusion autolora --fusion-weights "$work/mergers.safetensors" | sed 's/"command":"dit"/"command":"autolora"/' >> "$results"
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
hot = min(r["seconds"] for r in rows if r["command"] == "hot")
auto = min(r["seconds"] for r in rows if r["command"] == "autolora")
print(f"mid config, cpu: two LoRAs hot {hot:.3f} s/forward, --fusion autolora {auto:.3f} s/forward, ratio {auto / hot:.3f}")
PY
rm -f "$results"
