"""Benchmark anchor for `lorafuse dit`: builds a FLUX transformer from a config with a
fixed seed, writes it as a diffusers folder plus inputs (so lorafuse runs the very same
model), then times diffusers/PyTorch on CPU in float32. Prints one JSON line.
usage: python3 Tools/bench/flux_pytorch.py OUT_DIR [--repeat R] [--threads N]
"""
import argparse
import json
import pathlib
import time

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

# Mid-size config of the DiT issue: hidden 1024 = 8 heads x 128, 2 double + 4 single
# blocks, 1024 image tokens (32x32 packed latents) and 128 text tokens.
CONFIG = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=128,
              num_attention_heads=8, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
              axes_dims_rope=(16, 56, 56))
GRID, TEXT = (32, 32), 128


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    generator = torch.Generator().manual_seed(7)
    model = FluxTransformer2DModel(**CONFIG).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    if not (out / "transformer" / "config.json").exists():
        model.save_pretrained(out / "transformer", safe_serialization=True)
    height, width = GRID
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    inputs = {
        "hidden_states": torch.randn(1, height * width, CONFIG["in_channels"], generator=generator),
        "encoder_hidden_states": torch.randn(1, TEXT, CONFIG["joint_attention_dim"], generator=generator),
        "pooled_projections": torch.randn(1, CONFIG["pooled_projection_dim"], generator=generator),
        "timestep": torch.tensor([0.5]),
        "guidance": torch.tensor([3.5]),
        "img_ids": ids.reshape(-1, 3),
        "txt_ids": torch.zeros(TEXT, 3),
    }
    save_file(inputs, str(out / "inputs.safetensors"))
    with torch.no_grad():
        model(**inputs, return_dict=False)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            sample = model(**inputs, return_dict=False)[0]
            best = min(best, time.perf_counter() - start)
    save_file({"sample": sample.contiguous()}, str(out / "pytorch_sample.safetensors"))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"command": "dit", "backend": "pytorch", "device": f"torch {torch.__version__} CPU ({args.threads} threads)",
                      "seconds": best, "weight_bytes": weights}))


if __name__ == "__main__":
    main()
