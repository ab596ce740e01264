"""A random rank-R LoRA on every Linear of a FLUX transformer, in the diffusers/peft layout
(`transformer.<layer>.lora_A.weight` [R, in], `lora_B` [out, R]). The layers come from a
diffusers transformer folder (every 2-D `.weight` of a FLUX transformer is a Linear, so the
checkpoint's own headers list them) or, with `flux1`, from FLUX.1-dev's shapes (19 double
and 38 single blocks, width 3072) without any checkpoint. Needs numpy, torch and safetensors.
usage: python3 Tools/bench/make_bench_lora.py (TRANSFORMER_DIR | flux1) OUT.safetensors
                                              [--rank 16] [--seed S] [--bf16]
"""
import argparse
import json
import pathlib
import struct

import numpy as np
import torch
from safetensors.torch import save_file


def linear_shapes(folder: pathlib.Path) -> dict:
    shapes = {}
    for path in sorted(folder.glob("diffusion_pytorch_model*.safetensors")):
        with open(path, "rb") as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__" and name.endswith(".weight") and len(entry["shape"]) == 2:
                shapes[name[: -len(".weight")]] = entry["shape"]
    return shapes


def flux1_shapes() -> dict:
    """FLUX.1-dev's Linears under diffusers names: {layer: [out, in]}."""
    d, mlp, shapes = 3072, 12288, {}
    for prefix in ("timestep_embedder", "guidance_embedder"):
        shapes[f"time_text_embed.{prefix}.linear_1"] = [d, 256]
        shapes[f"time_text_embed.{prefix}.linear_2"] = [d, d]
    shapes["time_text_embed.text_embedder.linear_1"] = [d, 768]
    shapes["time_text_embed.text_embedder.linear_2"] = [d, d]
    shapes["x_embedder"], shapes["context_embedder"] = [d, 64], [d, 4096]
    for i in range(19):
        b = f"transformer_blocks.{i}"
        shapes[f"{b}.norm1.linear"] = shapes[f"{b}.norm1_context.linear"] = [6 * d, d]
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            shapes[f"{b}.attn.{name}"] = [d, d]
        for stream in ("ff", "ff_context"):
            shapes[f"{b}.{stream}.net.0.proj"], shapes[f"{b}.{stream}.net.2"] = [mlp, d], [d, mlp]
    for i in range(38):
        b = f"single_transformer_blocks.{i}"
        shapes[f"{b}.norm.linear"] = [3 * d, d]
        for name in ("to_q", "to_k", "to_v"):
            shapes[f"{b}.attn.{name}"] = [d, d]
        shapes[f"{b}.proj_mlp"], shapes[f"{b}.proj_out"] = [mlp, d], [d, d + mlp]
    shapes["norm_out.linear"], shapes["proj_out"] = [2 * d, d], [64, d]
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", help="a diffusers transformer folder, or flux1")
    parser.add_argument("out")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--bf16", action="store_true", help="store the factors as bfloat16")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    shapes = flux1_shapes() if args.source == "flux1" else linear_shapes(pathlib.Path(args.source))
    tensors = {}
    for layer, (out_features, in_features) in shapes.items():
        for key, shape in ((f"transformer.{layer}.lora_A.weight", (args.rank, in_features)),
                           (f"transformer.{layer}.lora_B.weight", (out_features, args.rank))):
            values = torch.from_numpy((rng.standard_normal(shape) * 0.01).astype(np.float32))
            tensors[key] = values.to(torch.bfloat16) if args.bf16 else values
    save_file(tensors, args.out)
    print(f"{len(tensors) // 2} layers, rank {args.rank}: {args.out}")


if __name__ == "__main__":
    main()
