#!/usr/bin/env bash
# K-LoRA costs, one run:
#  1. the plan for two rank-16 LoRAs (bf16) on every Linear of FLUX.1-dev's shapes (504
#     layers, random weights from Tools/bench/make_bench_lora.py; no checkpoint needed), on
#     the CPU backend and on Vulkan (lavapipe here: slow, skip with KLORA_PLAN_VULKAN=0);
#  2. the per-step forward of the mid-size model of flux-benchmark.sh with --fusion klora
#     against the same forward with one hot LoRA of the same rank (the anchor); the modes
#     alternate twice, best of REPEAT each. The plan is computed (and cached) before timing.
#   usage: Tools/bench/klora-benchmark.sh [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-3}"
work=.build-bench/klora
mid=.build-bench/flux-mid
mkdir -p "$work"
for name in content style; do
    seed=1; [ "$name" = style ] && seed=2
    [ -f "$work/flux1-$name.safetensors" ] || python3 Tools/bench/make_bench_lora.py flux1 "$work/flux1-$name.safetensors" --seed "$seed" --bf16
done
if [ ! -f "$mid/transformer/config.json" ]; then python3 Tools/bench/flux_pytorch.py "$mid" --repeat 1 > /dev/null; fi
[ -f "$work/mid-content.safetensors" ] || python3 Tools/bench/make_bench_lora.py "$mid/transformer" "$work/mid-content.safetensors" --seed 3
[ -f "$work/mid-style.safetensors" ] || python3 Tools/bench/make_bench_lora.py "$mid/transformer" "$work/mid-style.safetensors" --seed 4
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
export LORAFUSE_CACHE="$work/cache"
results=$(mktemp)
backends="cpu"
if "$bin" backends --json | grep -q '"available":true,"backend":"vulkan"' && [ "${KLORA_PLAN_VULKAN:-1}" != 0 ]; then backends="cpu vulkan"; fi
for backend in $backends; do
    "$bin" klora plan --content "$work/flux1-content.safetensors" --style "$work/flux1-style.safetensors" --backend "$backend" \
        --no-cache --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"command":"plan","backend":d["backend"],"seconds":d["seconds"],"units":len(d["units"])}))' >> "$results"
done
"$bin" klora plan --content "$work/mid-content.safetensors" --style "$work/mid-style.safetensors" --model "$mid" > /dev/null
common=(dit --model "$mid" --inputs "$mid/inputs.safetensors" --repeat "$repeat" --json)
for _ in 1 2; do
    "$bin" "${common[@]}" --lora "$work/mid-content.safetensors" | sed 's/"command":"dit"/"command":"single"/' >> "$results"
    "$bin" "${common[@]}" --fusion klora --content "$work/mid-content.safetensors" --style "$work/mid-style.safetensors" --progress 0.5 \
        | sed 's/"command":"dit"/"command":"klora"/' >> "$results"
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for r in rows:
    if r["command"] == "plan":
        print(f"plan, FLUX.1 shapes ({r['units']} shared layers), {r['backend']}: {r['seconds']:.1f} s")
single = min(r["seconds"] for r in rows if r["command"] == "single")
klora = min(r["seconds"] for r in rows if r["command"] == "klora")
print(f"mid config, cpu: one hot LoRA {single:.3f} s/forward, --fusion klora {klora:.3f} s/forward, ratio {klora / single:.3f}")
PY
rm -f "$results"
