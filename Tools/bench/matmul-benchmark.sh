#!/usr/bin/env bash
# Matmul GFLOP/s for every backend next to numpy's OpenBLAS, measured side by side on this
# machine (release build). The backends run in ROUNDS rounds, each round every backend
# back to back (best of REPEAT each), so a slow phase of the machine hits them alike. The
# table gives each backend's best over all rounds against numpy's best, and the ratio
# within each round (median, then min–max).
#   usage: Tools/bench/matmul-benchmark.sh [REPEAT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-5}"
rounds="${2:-3}"
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
shapes=("1024 1024 1024" "4096 3072 3072")
vulkan=0
if "$bin" backends --json | grep -q '"backend":"vulkan".*"available":true\|"available":true.*"backend":"vulkan"'; then vulkan=1; fi
results=$(mktemp)
tag() { sed "s/^{/{\"round\":$1,/"; }
profile() { "$bin" profile matmul --m "$m" --n "$n" --k "$k" --repeat "$repeat" --json "$@"; }
for round in $(seq 1 "$rounds"); do
    for shape in "${shapes[@]}"; do
        read -r m n k <<< "$shape"
        python3 Tools/bench/numpy_matmul.py "$m" "$n" "$k" --repeat "$repeat" | tag "$round" >> "$results"
        profile | tag "$round" >> "$results"
        LORAFUSE_CPU_BLAS=0 profile | sed 's/"backend":"cpu"/"backend":"cpu (built-in kernels)"/' | tag "$round" >> "$results"
        if [ "$vulkan" = 1 ]; then profile --backend vulkan | tag "$round" >> "$results"; fi
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
shapes = sorted({(r["m"], r["n"], r["k"]) for r in rows}, key=lambda s: s[0] * s[1] * s[2])
backends = list(dict.fromkeys(r["backend"] for r in rows))
print(f"{'shape':<16} {'backend':<24} {'device':<36} {'GFLOP/s':>8} {'vs numpy':>8}   per-round ratio: median (min-max)")
for shape in shapes:
    at = [r for r in rows if (r["m"], r["n"], r["k"]) == shape]
    numpy = {r["round"]: r["gflops"] for r in at if r["backend"] == "numpy"}
    best_numpy = max(numpy.values())
    for backend in backends:
        mine = [r for r in at if r["backend"] == backend]
        if not mine:
            continue
        best = max(mine, key=lambda r: r["gflops"])
        ratios = [r["gflops"] / numpy[r["round"]] for r in mine if r["round"] in numpy]
        paired = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{'x'.join(map(str, shape)):<16} {backend:<24} {best['device'][:36]:<36} {best['gflops']:8.1f} "
              f"{best['gflops'] / best_numpy:8.2f}   {paired}")
PY
rm -f "$results"
