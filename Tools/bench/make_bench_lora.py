"""A random rank-R LoRA on every Linear of a diffusers FLUX transformer folder, in the
diffusers/peft layout (`transformer.<layer>.lora_A.weight` [R, in], `lora_B` [out, R]).
Every 2-D `.weight` of a FLUX transformer is a Linear, so the layer list is read from the
checkpoint's own headers. Needs numpy and safetensors only.
usage: python3 Tools/bench/make_bench_lora.py TRANSFORMER_DIR OUT.safetensors [--rank 16]
"""
import argparse
import json
import pathlib
import struct

import numpy as np
from safetensors.numpy import save_file


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transformer")
    parser.add_argument("out")
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(16)
    tensors = {}
    for layer, (out_features, in_features) in linear_shapes(pathlib.Path(args.transformer)).items():
        tensors[f"transformer.{layer}.lora_A.weight"] = (rng.standard_normal((args.rank, in_features)) * 0.01).astype(np.float32)
        tensors[f"transformer.{layer}.lora_B.weight"] = (rng.standard_normal((out_features, args.rank)) * 0.01).astype(np.float32)
    save_file(tensors, args.out)
    print(f"{len(tensors) // 2} layers, rank {args.rank}: {args.out}")


if __name__ == "__main__":
    main()
