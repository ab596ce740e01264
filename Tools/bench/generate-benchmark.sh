#!/usr/bin/env bash
# Text-to-image cost, one run each: the mid-size transformer of flux_pytorch.py in a FLUX
# pipeline (generate_pytorch.py: small text encoders of FLUX's widths, a slim FLUX-layout
# VAE), 512×512 (1024 image tokens), 512 T5 tokens, the same imported noise everywhere.
#  - anchor: diffusers' FluxPipeline on CPU in float32;
#  - `lorafuse generate` on the CPU backend, and on Vulkan when a device is present.
# Prints seconds per step, encode/decode seconds and peak RSS, and the ratios to the anchor.
#   usage: Tools/bench/generate-benchmark.sh [STEPS] [VULKAN_STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-3}"
vulkan_steps="${2:-2}"
work=.build-bench/generate
[ -f "$work/noise.safetensors" ] || python3 Tools/bench/generate_pytorch.py make "$work"
swift build -c release --product lorafuse > /dev/null
bin=.build/release/lorafuse
results=$(mktemp)
python3 Tools/bench/generate_pytorch.py run "$work" "$steps" 2>/dev/null | tail -1 >> "$results"
common=(generate --model "$work" --prompt "a watercolor painting of a fox in a snowy forest" --width 512 --height 512
        --noise "$work/noise.safetensors" --output "$work/out.png" --json)
"$bin" "${common[@]}" --steps "$steps" --backend cpu >> "$results"
if "$bin" backends --json | grep -q '"available":true,"backend":"vulkan"'; then
    "$bin" "${common[@]}" --steps "$vulkan_steps" --backend vulkan >> "$results"
fi
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
anchor = next(r for r in rows if r["backend"] == "pytorch")
mib = 1 << 20
for r in rows:
    print(f"{r['backend']:8s} {r['steps']} steps: {r['seconds_per_step']:.3f} s/step "
          f"({anchor['seconds_per_step'] / r['seconds_per_step']:.2f}x PyTorch's speed), encode {r['encode_seconds']:.2f} s, "
          f"decode {r['decode_seconds']:.2f} s, peak RSS {r['peak_rss_bytes'] / mib:.0f} MiB "
          f"({r['peak_rss_bytes'] / anchor['peak_rss_bytes']:.2f}x)")
PY
rm -f "$results"
