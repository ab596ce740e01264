#!/usr/bin/env bash
# Text-encoder cost, one run each: a mid-size T5 v1.1 encoder (12 layers, 1024 wide, 16
# heads, gated-GELU 2816; t5_pytorch.py) encoding one prompt padded to 512 tokens.
#  - anchor: transformers/PyTorch on CPU (weights loaded into memory, F32);
#  - `lorafuse encode` on the CPU backend with the T5 as an F32 sharded folder, a BF16
#    single file and an F8_E4M3 single file (weights memory-mapped, kept narrow).
# Each line: T5 seconds and the process's peak RSS; then ratios against the anchor.
#   usage: Tools/bench/text-encoder-benchmark.sh [BACKEND]
set -euo pipefail
cd "$(dirname "$0")/../.."
backend="${1:-cpu}"
work=.build-bench/t5
prompt="a watercolor painting of a fox in a snowy forest, trending on artstation, highly detailed"
[ -f "$work/t5_fp8_e4m3fn.safetensors" ] || python3 Tools/bench/t5_pytorch.py make "$work"
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
results=$(mktemp)
python3 Tools/bench/t5_pytorch.py run "$work" "$prompt" >> "$results"
parts=(--clip "$work/text_encoder" --clip-tokenizer "$work/tokenizer" --t5-tokenizer "$work/tokenizer_2")
"$bin" encode "${parts[@]}" --t5 "$work/text_encoder_2" --prompt "$prompt" --backend "$backend" --json | sed 's/"command":"encode"/"command":"f32"/' >> "$results"
"$bin" encode "${parts[@]}" --t5 "$work/t5_bf16.safetensors" --prompt "$prompt" --backend "$backend" --json | sed 's/"command":"encode"/"command":"bf16"/' >> "$results"
"$bin" encode "${parts[@]}" --t5 "$work/t5_fp8_e4m3fn.safetensors" --prompt "$prompt" --backend "$backend" --json | sed 's/"command":"encode"/"command":"fp8"/' >> "$results"
python3 - "$results" "$work" <<'PY'
import json, os, sys
rows = {r["command"]: r for r in (json.loads(line) for line in open(sys.argv[1]) if line.strip())}
anchor = rows["encode-t5"]
sizes = {"f32": sum(os.path.getsize(os.path.join(sys.argv[2], "text_encoder_2", f)) for f in os.listdir(os.path.join(sys.argv[2], "text_encoder_2")) if f.endswith(".safetensors")),
         "bf16": os.path.getsize(os.path.join(sys.argv[2], "t5_bf16.safetensors")),
         "fp8": os.path.getsize(os.path.join(sys.argv[2], "t5_fp8_e4m3fn.safetensors"))}
mib = 1 << 20
print(f"pytorch f32: T5 {anchor['seconds']:.3f} s, peak RSS {anchor['peak_rss_bytes'] / mib:.0f} MiB (F32 weights {sizes['f32'] / mib:.0f} MiB)")
for name in ("f32", "bf16", "fp8"):
    row = rows[name]
    print(f"lorafuse {row['backend']} {name}: T5 {row['t5_seconds']:.3f} s ({anchor['seconds'] / row['t5_seconds']:.2f}x PyTorch's speed), "
          f"peak RSS {row['peak_rss_bytes'] / mib:.0f} MiB ({row['peak_rss_bytes'] / anchor['peak_rss_bytes']:.2f}x PyTorch's; weights {sizes[name] / mib:.0f} MiB)")
PY
rm -f "$results"
