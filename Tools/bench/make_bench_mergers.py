"""Random AutoLoRA merger weights (the LoRAFusion-preview-FLUX.1-dev key layout,
`model_dict.<DiffSynth layer, '.' → '___'>.<field>`) for a diffusers FLUX transformer folder:
widths from its config.json. Needs numpy and safetensors.
usage: python3 Tools/bench/make_bench_mergers.py TRANSFORMER_DIR OUT.safetensors
"""
import json
import pathlib
import sys

import numpy as np
from safetensors.numpy import save_file


def main() -> None:
    folder, out = pathlib.Path(sys.argv[1]), sys.argv[2]
    config = json.loads((folder / "config.json").read_text())
    d = config["num_attention_heads"] * config["attention_head_dim"]
    widths = {"attn.a_to_qkv": 3 * d, "attn.a_to_out": d, "ff_a.0": 4 * d, "ff_a.2": d, "norm1_a.linear": 6 * d}
    widths.update({k.replace("a_", "b_").replace("_a", "_b"): v for k, v in widths.items()})
    rng = np.random.default_rng(5)
    tensors = {}
    names = [(f"blocks.{i}.{k}", w) for i in range(config["num_layers"]) for k, w in widths.items()]
    names += [(f"single_blocks.{i}.{k}", w) for i in range(config["num_single_layers"])
              for k, w in {"to_qkv_mlp": 7 * d, "proj_out": d, "norm.linear": 3 * d}.items()]
    for name, width in names:
        for field in ["weight_base", "weight_lora", "weight_cross", "weight_out", "bias", "norm_base.weight", "norm_base.bias",
                      "norm_lora.weight", "norm_lora.bias"]:
            base = 1.0 if field.endswith("norm_base.weight") or field.endswith("norm_lora.weight") else 0.0
            tensors[f"model_dict.{name.replace('.', '___')}.{field}"] = (base + 0.3 * rng.standard_normal(width)).astype(np.float32)
    save_file(tensors, out)
    print(f"{len(names)} mergers: {out}")


if __name__ == "__main__":
    main()
