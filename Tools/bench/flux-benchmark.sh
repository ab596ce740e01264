#!/usr/bin/env bash
# FLUX forward pass, mid-size config (hidden 1024, 2 double + 4 single blocks, 1024 image +
# 128 text tokens): diffusers/PyTorch on CPU, the CPU backend and Vulkan, one run, same
# weights and inputs. Needs torch + diffusers (Tools/reference/requirements.txt).
# PyTorch and the CPU backend alternate for ROUNDS rounds of REPEAT forwards each and the
# best forward of each counts: a VM's speed drifts by more than the gap being measured.
#   usage: Tools/bench/flux-benchmark.sh [REPEAT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-3}"
rounds="${2:-3}"
work=.build-bench/flux-mid
mkdir -p "$work"
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
results=$(mktemp)
for _ in $(seq "$rounds"); do
    python3 Tools/bench/flux_pytorch.py "$work" --repeat "$repeat" >> "$results"
    "$bin" dit --model "$work" --inputs "$work/inputs.safetensors" --output "$work/cpu_sample.safetensors" --repeat "$repeat" --json >> "$results"
done
# Peak memory of loading the checkpoint and running one pass, measured in its own process.
"$bin" dit --model "$work" --inputs "$work/inputs.safetensors" --repeat 1 --json | sed 's/"command":"dit"/"command":"dit-memory"/' >> "$results"
if "$bin" backends --json | grep -q '"available":true,"backend":"vulkan"'; then
    "$bin" dit --model "$work" --inputs "$work/inputs.safetensors" --backend vulkan --repeat 1 --json >> "$results"
fi
python3 - "$results" "$work" <<'PY'
import json, sys
import numpy as np
from safetensors.numpy import load_file
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
# Best forward of each backend over all rounds.
best = {}
for r in rows:
    key = (r["backend"], r.get("command"))
    if key not in best or r["seconds"] < best[key]["seconds"]:
        best[key] = r
rows = list(best.values())
torch_row = next(r for r in rows if r["backend"] == "pytorch")
memory = {r["backend"]: r["peak_rss_bytes"] for r in rows if r.get("command") == "dit-memory"}
rows = [r for r in rows if r.get("command") != "dit-memory"]
weights = torch_row["weight_bytes"]
print(f"{'backend':<10} {'device':<44} {'s/forward':>10} {'PyTorch/ours':>13} {'peak RSS / weights':>19}")
for r in rows:
    ratio = torch_row["seconds"] / r["seconds"]
    peak = memory.get(r["backend"], r.get("peak_rss_bytes"))
    rss = f"{peak / weights:.2f}" if peak else "-"
    print(f"{r['backend']:<10} {r['device'][:44]:<44} {r['seconds']:10.3f} {ratio:13.2f} {rss:>19}")
a = load_file(f"{sys.argv[2]}/cpu_sample.safetensors")["sample"]; e = load_file(f"{sys.argv[2]}/pytorch_sample.safetensors")["sample"]
print(f"cpu vs pytorch sample: max relative error {np.abs(a - e).max() / np.abs(e).max():.2e}")
PY
rm -f "$results"
