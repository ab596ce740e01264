#!/usr/bin/env bash
# LoRA cost on the FLUX mid-size config (hidden 1024, 2 double + 4 single blocks, 1024 image
# + 128 text tokens) with one rank-16 LoRA on every Linear: base forward, hot LoRA forward
# and merged forward (with the merge time), on the CPU backend and on Vulkan, one run.
# The anchor is the base forward of the same backend in the same run.
# Needs the model from Tools/bench/flux-benchmark.sh (or flux_pytorch.py) in .build-bench/flux-mid.
#   usage: Tools/bench/lora-benchmark.sh [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-3}"
work=.build-bench/flux-mid
if [ ! -f "$work/transformer/config.json" ]; then python3 Tools/bench/flux_pytorch.py "$work" --repeat 1 > /dev/null; fi
[ -f "$work/lora-r16.safetensors" ] || python3 Tools/bench/make_bench_lora.py "$work/transformer" "$work/lora-r16.safetensors" --rank 16
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
results=$(mktemp)
backends="cpu"
if "$bin" backends --json | grep -q '"available":true,"backend":"vulkan"'; then backends="cpu vulkan"; fi
# The modes alternate (twice on CPU, best kept) so a drift in this machine's speed hits all alike.
for backend in $backends; do
    r="$repeat"; rounds=2; [ "$backend" = vulkan ] && r=1 && rounds=1
    common=(dit --model "$work" --inputs "$work/inputs.safetensors" --backend "$backend" --repeat "$r" --json)
    for _ in $(seq "$rounds"); do
        "$bin" "${common[@]}" | sed 's/"command":"dit"/"command":"base"/' >> "$results"
        "$bin" "${common[@]}" --lora "$work/lora-r16.safetensors" | sed 's/"command":"dit"/"command":"hot"/' >> "$results"
        "$bin" "${common[@]}" --lora "$work/lora-r16.safetensors" --merge | sed 's/"command":"dit"/"command":"merged"/' >> "$results"
    done
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"{'backend':<8} {'mode':<7} {'s/forward':>10} {'vs base':>8} {'merge s':>8}")
for backend in dict.fromkeys(r["backend"] for r in rows):
    best = {}
    for r in rows:
        if r["backend"] == backend and (r["command"] not in best or r["seconds"] < best[r["command"]]["seconds"]):
            best[r["command"]] = r
    base = best["base"]["seconds"]
    for mode in ("base", "hot", "merged"):
        r = best[mode]
        merge = f"{min(x['merge_seconds'] for x in rows if x['backend'] == backend and 'merge_seconds' in x):.3f}" if mode == "merged" else "-"
        print(f"{backend:<8} {mode:<7} {r['seconds']:10.3f} {r['seconds'] / base:8.2f} {merge:>8}")
PY
rm -f "$results"
