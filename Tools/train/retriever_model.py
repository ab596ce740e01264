"""AutoLoRA's LoRA weight encoder, written from the research code (`retriever.py` in
lzws/AutoLoRA: LoRALayerBlock, LoRAEmbedder, LoRAEncoder with DiffSynth's CLIPEncoderLayer),
with its state-dict names, for any FLUX-shaped model; and LoRAs read as DiffSynth reads them.
Used by Tools/reference/make_retrieval_fixtures.py and Tools/train/train_retriever.py.
this project's one extension: a layer the LoRA lacks is a zero LoRA (its token is the projection bias).
"""
import importlib.util
import pathlib
import sys
import types

import torch
from safetensors.torch import load_file

ROOT = pathlib.Path(importlib.util.find_spec("diffsynth").submodule_search_locations[0])
for name, path in [("diffsynth", ROOT), ("diffsynth.models", ROOT / "models"), ("diffsynth.core", ROOT / "core"),
                   ("diffsynth.utils", ROOT / "utils"), ("diffsynth.utils.state_dict_converters", ROOT / "utils" / "state_dict_converters")]:
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
if "diffsynth.core.loader" not in sys.modules:
    stub = types.ModuleType("diffsynth.core.loader")
    stub.load_state_dict = None  # flux_lora_patcher imports it; the loader class used here does not call it
    sys.modules["diffsynth.core.loader"] = stub
from diffsynth.models.flux_lora_patcher import FluxLoRALoader  # noqa: E402

# Defaults: the tiny FLUX of Tests/Fixtures/flux/dev-tiny; the research code's attention.
D, MLP, DOUBLE, SINGLE = 32, 128, 2, 2
WIDTH, LAYERS, INTERMEDIATE, HEADS, HEAD_DIM = 16, 2, 40, 12, 64


def patterns(D=D, MLP=MLP, DOUBLE=DOUBLE, SINGLE=SINGLE):
    """The research code's default_lora_patterns at a model's sizes: (name, (in, out), type)."""
    double = {"attn.a_to_qkv": (D, 3 * D), "attn.a_to_out": (D, D), "ff_a.0": (D, MLP), "ff_a.2": (MLP, D), "norm1_a.linear": (D, 6 * D),
              "attn.b_to_qkv": (D, 3 * D), "attn.b_to_out": (D, D), "ff_b.0": (D, MLP), "ff_b.2": (MLP, D), "norm1_b.linear": (D, 6 * D)}
    single = {"to_qkv_mlp": (D, 3 * D + MLP), "proj_out": (D + MLP, D), "norm.linear": (D, 3 * D)}
    out = [(f"blocks.{i}.{suffix}", dims, suffix) for i in range(DOUBLE) for suffix, dims in double.items()]
    out += [(f"single_blocks.{i}.{suffix}", dims, suffix) for i in range(SINGLE) for suffix, dims in single.items()]
    return out


class Attention(torch.nn.Module):
    """DiffSynth's Attention as CLIPEncoderLayer builds it: num_heads × head_dim, whatever the width."""
    def __init__(self, width):
        super().__init__()
        inner = HEADS * HEAD_DIM
        self.to_q, self.to_k, self.to_v = (torch.nn.Linear(width, inner) for _ in range(3))
        self.to_out = torch.nn.Linear(inner, width)

    def forward(self, x, mask):
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, HEADS, HEAD_DIM).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(y.transpose(1, 2).reshape(b, n, HEADS * HEAD_DIM))


class EncoderLayer(torch.nn.Module):
    """CLIPEncoderLayer: pre-LN attention and quick-GELU MLP, residuals."""
    def __init__(self, width, intermediate):
        super().__init__()
        self.attn = Attention(width)
        self.layer_norm1, self.layer_norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.fc1, self.fc2 = torch.nn.Linear(width, intermediate), torch.nn.Linear(intermediate, width)

    def forward(self, x, mask):
        x = x + self.attn(self.layer_norm1(x), mask)
        h = self.fc1(self.layer_norm2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


class Embedder(torch.nn.Module):
    def __init__(self, sizes, width):
        super().__init__()
        self.patterns = patterns(*sizes)
        self.model_dict = torch.nn.ModuleDict()
        for name, (dim_in, _), _ in self.patterns:
            block = torch.nn.Module()
            block.x = torch.nn.Parameter(torch.randn(1, 1, dim_in))
            self.model_dict[name.replace(".", "___")] = block
        self.proj_dict = torch.nn.ModuleDict()
        for _, (_, dim_out), kind in self.patterns:
            if kind.replace(".", "___") not in self.proj_dict:
                self.proj_dict[kind.replace(".", "___")] = torch.nn.Linear(dim_out, width)

    def forward(self, lora):
        tokens = []
        for name, (_, dim_out), kind in self.patterns:
            x = self.model_dict[name.replace(".", "___")].x
            if name + ".lora_A.weight" in lora:
                out = x @ lora[name + ".lora_A.weight"].T @ lora[name + ".lora_B.weight"].T
            else:
                out = torch.zeros(1, 1, dim_out, dtype=x.dtype)  # a layer the LoRA lacks: a zero LoRA
            tokens.append(self.proj_dict[kind.replace(".", "___")](out))
        return torch.cat(tokens, dim=1)


class LoRAEncoder(torch.nn.Module):
    """sizes: the FLUX model's (hidden, MLP hidden, double blocks, single blocks)."""
    def __init__(self, sizes=(D, MLP, DOUBLE, SINGLE), width=WIDTH, layers=LAYERS, intermediate=INTERMEDIATE):
        super().__init__()
        count = len(patterns(*sizes))
        self.embedder = Embedder(sizes, width)
        self.position_embeds = torch.nn.Parameter(torch.zeros(1, count, width))
        self.encoders = torch.nn.ModuleList([EncoderLayer(width, intermediate) for _ in range(layers)])
        self.final_layer_norm = torch.nn.LayerNorm(width)
        self.register_buffer("mask", torch.full((count, count), float("-inf")).triu(1), persistent=False)

    def forward(self, lora):
        x = self.embedder(lora) + self.position_embeds
        for layer in self.encoders:
            x = layer(x, self.mask.to(x.dtype))
        return self.final_layer_norm(x).mean(dim=1)


def read_as_diffsynth(path):
    """DiffSynth's fused layout, `.default` dropped (the research code's key names)."""
    state = FluxLoRALoader().convert_state_dict(load_file(str(path)))
    return {k.replace(".default.", "."): v.double() for k, v in state.items() if ".lora_" in k}
