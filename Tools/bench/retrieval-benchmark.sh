#!/usr/bin/env bash
# Retrieval costs, one run:
#  1. encoding one FLUX.1-dev-sized LoRA (304 layers, rank 16, random BF16) with a FLUX-sized
#     weight encoder (the research code's defaults: width 768, 2 layers, 3072 MLP; random) on
#     the CPU backend and on Vulkan when present (`lorafuse lora embed`, best of 2 after loading);
#  2. `lorafuse pool search` end to end over 10,000 synthetic 768-d embeddings (min and median
#     of 20 runs): with a stored
#     query embedding (process start, SQLite scan, cosine ranking), then with a prompt embedded by
#     the 768-wide CLIP of generate-benchmark.sh's pipeline.
#   usage: Tools/bench/retrieval-benchmark.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
work=.build-bench/retrieval
mkdir -p "$work"
[ -f "$work/lora-flux1.safetensors" ] || python3 Tools/bench/make_bench_lora.py flux1 "$work/lora-flux1.safetensors" --bf16 > /dev/null
[ -f "$work/encoder-flux1.safetensors" ] || python3 - "$work/encoder-flux1.safetensors" <<'PY'
import sys, torch
sys.path.insert(0, "Tools/train")
from retriever_model import LoRAEncoder
from safetensors.torch import save_file
torch.manual_seed(0)
encoder = LoRAEncoder((3072, 12288, 19, 38), width=768, layers=2, intermediate=3072)
save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, sys.argv[1])
PY
[ -f .build-bench/generate/noise.safetensors ] || python3 Tools/bench/generate_pytorch.py make .build-bench/generate
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
backends="cpu"
if "$bin" backends --json | grep -q '"available":true,"backend":"vulkan"'; then backends="cpu vulkan"; fi
for backend in $backends; do
    "$bin" lora embed --encoder "$work/encoder-flux1.safetensors" --lora "$work/lora-flux1.safetensors" --backend "$backend" --repeat 2 --json
done
db="$work/pool.sqlite"
if [ ! -f "$db" ]; then
    "$bin" pool list --db "$db" > /dev/null  # creates the schema
    python3 - "$db" <<'PY'
import sqlite3, sys, numpy as np
rng = np.random.default_rng(0)
rows = [(f"/synthetic/lora{i:05d}.safetensors", f"{i:016x}", f"lora{i:05d}", f"synthetic caption {i}", "diffusers", 16, "flux",
         "synthetic", rng.standard_normal(768).astype("<f4").tobytes(), "2026-11-23 00:00:00.000") for i in range(10000)]
with sqlite3.connect(sys.argv[1]) as db:
    db.executemany("INSERT INTO lora (path, hash, name, caption, format, rank, target, encoderVersion, embedding, addedAt) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
PY
fi
python3 -c "
import numpy as np
from safetensors.numpy import save_file
save_file({'embedding': np.random.default_rng(1).standard_normal(768).astype('float32')}, '$work/query.safetensors')"
# End to end, min and median of 20 runs each (warm page cache; process start included).
timed() {  # label command...
    local label="$1" times=()
    shift
    for _ in $(seq 20); do
        local start end
        start=$(date +%s%N)
        "$@" > /dev/null
        end=$(date +%s%N)
        times+=($(( (end - start) / 100000 )))
    done
    sorted=($(printf '%s\n' "${times[@]}" | sort -n))
    echo "{\"command\":\"$label\",\"entries\":10000,\"min_ms\":$(( sorted[0] / 10 )).$(( sorted[0] % 10 )),\"median_ms\":$(( sorted[10] / 10 )).$(( sorted[10] % 10 ))}"
}
searches() {  # binary label
    timed "$2 lorafuse --version" "$1" --version
    timed "$2 pool search --embedding" "$1" pool search --embedding "$work/query.safetensors" --db "$db" -k 5
    timed "$2 pool search PROMPT" "$1" pool search "a watercolor painting of a fox" --text-encoders .build-bench/generate --db "$db" -k 5
}
searches "$bin" "release:"
# The same binary with the Swift runtime linked in (--static-swift-stdlib): no dynamic
# linking of libswiftCore/Foundation at start.
swift build -c release --product lorafuse --static-swift-stdlib --build-path .build-static > /dev/null
searches .build-static/release/lorafuse "static stdlib:"
"$bin" pool search "a watercolor painting of a fox" --text-encoders .build-bench/generate --db "$db" -k 1 --json
