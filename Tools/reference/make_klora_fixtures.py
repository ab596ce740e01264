"""K-LoRA reference (Ouyang et al., CVPR 2025, Eqs. 1-10), written from the paper's formulas
on top of diffusers + peft, for the dev-tiny FLUX model and the LoRA fixtures.

For each pair (content c, style s):
  units     every Linear both LoRAs touch. peft files hold one (A, B) per Linear; a kohya
            file fuses q, k, v (and the single blocks' MLP): split into the other file's
            parts, each part keeps the fused rank.
  ΔW        (alpha / r) · B · A, float64
  K         r_c · r_s (capped at the number of entries)
  S_c, S_s  sum of the K largest |ΔW| (torch.topk, exact)
  γ         Σ_units Σ|ΔW_c| / Σ_units Σ|ΔW_s|
  choice    at progress p: content if S_c >= γ · (1.5·p + 0.5) · S_s, else style
Each Linear then applies only its chosen adapter (peft's per-layer set_adapter) at the
user's scale; layers only one LoRA touches keep that LoRA. The DiT output of the dev-tiny
inputs is written for every progress value, run in float64.

Writes Tests/Fixtures/klora/plans.json and Tests/Fixtures/klora/<pair>.safetensors
(`sample_<i>` for PROGRESS[i]).
Run after make_lora_fixtures.py: python3 Tools/reference/make_klora_fixtures.py
"""
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file

from make_lora_fixtures import MODEL, OUT as LORA, add_loras, load_model

OUT = LORA.parent / "klora"
PROGRESS = [0.0, 0.2, 0.45, 0.7, 1.0]
ALPHA, BETA = 1.5, 0.5
# name: (content adapter, content scale, style adapter, style scale, fused content file)
PAIRS = {
    "all-partial": ("all", 1.0, "partial", 0.8, None),
    "attention-all": ("attention", 1.2, "all", 0.9, None),
    "kohya-partial": ("all", 1.0, "partial", 1.0, "all.kohya"),
}


def fused_ranks(path):
    """diffusers layer → rank of the kohya module it belongs to (q, k, v share the fused rank)."""
    tensors = load_file(str(LORA / f"{path}.safetensors"))
    ranks = {}
    for key, value in tensors.items():
        if not key.endswith(".lora_down.weight"):
            continue
        module = key[len("lora_unet_"):-len(".lora_down.weight")]
        rank = value.shape[0]
        parts = module.split("_")
        if parts[0] == "double" and module.endswith("img_attn_qkv"):
            ranks.update({f"transformer_blocks.{parts[2]}.attn.to_{x}": rank for x in "qkv"})
        elif parts[0] == "double" and module.endswith("txt_attn_qkv"):
            ranks.update({f"transformer_blocks.{parts[2]}.attn.add_{x}_proj": rank for x in "qkv"})
        elif parts[0] == "single" and module.endswith("linear1"):
            block = f"single_transformer_blocks.{parts[2]}"
            ranks.update({f"{block}.attn.to_{x}": rank for x in "qkv"})
            ranks[f"{block}.proj_mlp"] = rank
    return ranks


def lora_layers(model, adapter):
    return {name: module for name, module in model.named_modules()
            if hasattr(module, "lora_A") and adapter in module.lora_A}


def delta(module, adapter):
    a = module.lora_A[adapter].weight.to(torch.float64)
    b = module.lora_B[adapter].weight.to(torch.float64)
    return (module.lora_alpha[adapter] / module.r[adapter]) * (b @ a)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = load_model()
    files = add_loras(model, torch.Generator().manual_seed(2024))
    for name, (_, state) in files.items():  # the same weights as the committed LoRA fixtures
        committed = load_file(str(LORA / f"{name}.peft.safetensors"))
        assert all(torch.equal(committed[k], v) for k, v in state.items()), name
    model = model.to(torch.float64)
    inputs = {k: v.to(torch.float64) for k, v in load_file(str(MODEL / "inputs.safetensors")).items()}

    plans = {}
    for pair, (content, content_scale, style, style_scale, fused) in PAIRS.items():
        c_layers, s_layers = lora_layers(model, content), lora_layers(model, style)
        shared = [name for name in c_layers if name in s_layers]
        c_ranks = fused_ranks(fused) if fused else {}
        units = {}
        for name in shared:
            module = c_layers[name]
            dc, ds = delta(module, content), delta(module, style)
            rc = c_ranks.get(name, module.r[content])
            rs = module.r[style]
            k = min(rc * rs, dc.numel())
            units[name] = dict(k=k, content_rank=rc, style_rank=rs,
                               content_topk=torch.topk(dc.abs().flatten(), k).values.sum().item(),
                               style_topk=torch.topk(ds.abs().flatten(), k).values.sum().item(),
                               content_abs_sum=dc.abs().sum().item(), style_abs_sum=ds.abs().sum().item())
        gamma = sum(u["content_abs_sum"] for u in units.values()) / sum(u["style_abs_sum"] for u in units.values())
        choices, samples = [], {}
        for index, p in enumerate(PROGRESS):
            chosen = {name: ("content" if u["content_topk"] >= gamma * (ALPHA * p + BETA) * u["style_topk"] else "style")
                      for name, u in units.items()}
            choices.append([name for name, which in chosen.items() if which == "content"])
            for name, module in model.named_modules():
                if not hasattr(module, "lora_A"):
                    continue
                active = []
                if name in chosen:
                    active = [content if chosen[name] == "content" else style]
                else:
                    active = [a for a in (content, style) if a in module.lora_A]
                module.set_adapter(active or [content])
                for adapter, scale in ((content, content_scale), (style, style_scale)):
                    if adapter in module.lora_A:
                        module.set_scale(adapter, scale)
                if not active:  # neither LoRA here: switch the layer's LoRA off
                    module.set_scale(content, 0.0)
            with torch.no_grad():
                samples[f"sample_{index}"] = model(**inputs, return_dict=False)[0].to(torch.float32).contiguous()
            for module in model.modules():  # restore full scales for the next setting
                if hasattr(module, "lora_A"):
                    for adapter in module.lora_A:
                        module.set_scale(adapter, 1.0)
        save_file(samples, str(OUT / f"{pair}.safetensors"))
        content_file = f"{fused}.safetensors" if fused else f"{content}.peft.safetensors"
        plans[pair] = dict(content=content_file, content_scale=content_scale, style=f"{style}.peft.safetensors",
                           style_scale=style_scale, gamma=gamma, alpha=ALPHA, beta=BETA, progress=PROGRESS,
                           units=units, content_layers=choices)
    (OUT / "plans.json").write_text(json.dumps(plans, indent=1, sort_keys=True))
    (OUT / "README.md").write_text(__doc__)


if __name__ == "__main__":
    main()
