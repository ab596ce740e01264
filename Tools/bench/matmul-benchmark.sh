#!/usr/bin/env bash
# Matmul GFLOP/s for every backend next to numpy's OpenBLAS, measured in one run on this
# machine (release build). Ratios are against numpy on the same shape.
#   usage: Tools/bench/matmul-benchmark.sh [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-5}"
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
shapes=("1024 1024 1024" "4096 3072 3072")
results=$(mktemp)
for shape in "${shapes[@]}"; do
    read -r m n k <<< "$shape"
    python3 Tools/bench/numpy_matmul.py "$m" "$n" "$k" --repeat "$repeat" >> "$results"
    "$bin" profile matmul --m "$m" --n "$n" --k "$k" --repeat "$repeat" --json >> "$results"
    LORAFUSE_CPU_BLAS=0 "$bin" profile matmul --m "$m" --n "$n" --k "$k" --repeat "$repeat" --json \
        | sed 's/"backend":"cpu"/"backend":"cpu (built-in kernels)"/' >> "$results"
    if "$bin" backends --json | grep -q '"backend":"vulkan".*"available":true\|"available":true.*"backend":"vulkan"'; then
        "$bin" profile matmul --m "$m" --n "$n" --k "$k" --repeat "$repeat" --backend vulkan --json >> "$results"
    fi
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
anchor = {(r["m"], r["n"], r["k"]): r["gflops"] for r in rows if r["backend"] == "numpy"}
print(f"{'shape':<16} {'backend':<24} {'device':<36} {'GFLOP/s':>8} {'vs numpy':>8}")
for r in rows:
    key = (r["m"], r["n"], r["k"])
    print(f"{'x'.join(map(str, key)):<16} {r['backend']:<24} {r['device'][:36]:<36} {r['gflops']:8.1f} {r['gflops'] / anchor[key]:8.2f}")
PY
rm -f "$results"
