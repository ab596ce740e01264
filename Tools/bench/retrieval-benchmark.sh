#!/usr/bin/env bash
# Retrieval costs, one run:
#  1. encoding one FLUX.1-dev-sized LoRA (304 layers, rank 16, random BF16) with a FLUX-sized
#     weight encoder (the research code's defaults: width 768, 2 layers, 3072 MLP; random) on
#     the CPU backend and on Vulkan when present (`lorafuse lora embed`, best of 2 after loading);
#  2. `lorafuse pool search` end to end over 10,000 synthetic 768-d embeddings: with a stored
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
for attempt in 1 2 3; do
    start=$(date +%s%N)
    "$bin" pool search --embedding "$work/query.safetensors" --db "$db" -k 5 > /dev/null
    end=$(date +%s%N)
    echo "{\"command\":\"pool search --embedding\",\"entries\":10000,\"end_to_end_ms\":$(( (end - start) / 1000000 ))}"
done
for attempt in 1 2 3; do
    start=$(date +%s%N)
    line=$("$bin" pool search "a watercolor painting of a fox" --text-encoders .build-bench/generate --db "$db" -k 5 --json | head -1)
    end=$(date +%s%N)
    echo "{\"command\":\"pool search\",\"entries\":10000,\"end_to_end_ms\":$(( (end - start) / 1000000 )),\"first\":$line}"
done
