"""EST-LoRA reference (arXiv 2508.02165, "Subject or Style: Adaptive and Training-Free Mixture
of LoRAs"), written from the formulas of the authors' code (github.com/Godz-z/EST-LoRA:
klora.py, utils.py, inference_flux.py) on top of diffusers + peft, for the dev-tiny FLUX
model and the LoRA fixtures.

For each pair (content c, style s):
  layers    every Linear both LoRAs touch (a kohya file's fused q, k, v are split into the
            diffusers Linears, each part B_part · A), in the order the forward calls them
            (recorded with forward pre-hooks; `call_order` lists every LoRA Linear's call)
  E         ||B · A||_F^2, float64, of the product as the file stores it (no alpha / r:
            the code multiplies `lora_B @ lora_A` straight from the safetensors file)
  gamma     the code's `get_ratio_between_content_and_style`: per layer
            sum|B_c A_c| / sum|B_s A_s|, their mean, the ratios >= 3 x mean dropped, the mean
            of the rest
  counter   the code's `glo_count`: +1 at every call of a fused Linear, across steps; with
            T = steps x L (L fused layers; the code's `sum_timesteps = diffuse_step x layers`)
            the layer's progress is (counter mod T) / T
  S         alpha * progress + beta; the `s*` pattern takes it mod alpha (Python's %),
            alpha = 1.5 and beta = 1.5 * 0.85 for `s*` and 1.5 * 0.5 otherwise (inference_flux.py)
  choice    content while (E_c / gamma) / (E_s * S) > 1, else style
Each fused Linear applies only its chosen adapter (peft's per-layer set_adapter, set in a
forward pre-hook as the code's KLoRALinearLayer does) at the user's scale; layers only one
LoRA touches keep that LoRA. The DiT output of the dev-tiny inputs is written for every
step of a STEPS-step run, in float64, for both patterns.

Writes Tests/Fixtures/estlora/plans.json and Tests/Fixtures/estlora/<pair>-<pattern>.safetensors
(`sample_<step>`). Run after make_lora_fixtures.py: python3 Tools/reference/make_estlora_fixtures.py
"""
import json

import torch
from safetensors.torch import load_file, save_file

from make_lora_fixtures import MODEL, OUT as LORA, add_loras, load_model

OUT = LORA.parent / "estlora"
STEPS = 4
ALPHA = 1.5
PATTERNS = {"s*": ALPHA * 0.85, "linear": ALPHA * 0.5}
# name: (content adapter, content scale, style adapter, style scale, fused content file)
PAIRS = {
    "all-partial": ("all", 1.0, "partial", 0.8, None),
    "attention-all": ("attention", 1.2, "all", 0.9, None),
    "kohya-partial": ("all", 1.0, "partial", 1.0, "all.kohya"),
}


def lora_layers(model, adapter):
    return {name: module for name, module in model.named_modules()
            if hasattr(module, "lora_A") and adapter in module.lora_A}


def product(module, adapter):
    """B · A as the file stores them (no alpha / r), float64."""
    return module.lora_B[adapter].weight.to(torch.float64) @ module.lora_A[adapter].weight.to(torch.float64)


def trimmed_mean(ratios):
    mean = sum(ratios) / len(ratios)
    kept = [r for r in ratios if r < 3 * mean]
    return sum(kept) / len(kept) if kept else float("inf")


def call_order(model, inputs):
    """Every LoRA Linear's name in the order one forward calls it."""
    order, handles = [], []
    for name, module in model.named_modules():
        if hasattr(module, "lora_A"):
            handles.append(module.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name)))
    with torch.no_grad():
        model(**inputs, return_dict=False)
    for handle in handles:
        handle.remove()
    return order


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = load_model()
    files = add_loras(model, torch.Generator().manual_seed(2024))
    for name, (_, state) in files.items():  # the same weights as the committed LoRA fixtures
        committed = load_file(str(LORA / f"{name}.peft.safetensors"))
        assert all(torch.equal(committed[k], v) for k, v in state.items()), name
    model = model.to(torch.float64)
    inputs = {k: v.to(torch.float64) for k, v in load_file(str(MODEL / "inputs.safetensors")).items()}
    order = call_order(model, inputs)

    plans = {}
    for pair, (content, content_scale, style, style_scale, fused) in PAIRS.items():
        c_layers, s_layers = lora_layers(model, content), lora_layers(model, style)
        shared = [name for name in order if name in c_layers and name in s_layers]
        layers = {}
        for name in shared:
            pc, ps = product(c_layers[name], content), product(s_layers[name], style)
            layers[name] = dict(content_energy=(pc ** 2).sum().item(), style_energy=(ps ** 2).sum().item(),
                                content_abs_sum=pc.abs().sum().item(), style_abs_sum=ps.abs().sum().item())
        gamma = trimmed_mean([u["content_abs_sum"] / u["style_abs_sum"] for u in layers.values()])
        total = STEPS * len(shared)

        schedules = {}
        for pattern, beta in PATTERNS.items():
            state = dict(counter=0, chosen={})

            def choose(module, _args, name):
                state["counter"] += 1
                scale = ALPHA * ((state["counter"] % total) / total) + beta
                if pattern == "s*":
                    scale = scale % ALPHA
                u = layers[name]
                numerator, denominator = u["content_energy"] / gamma, u["style_energy"] * scale
                ratio = numerator / denominator if denominator != 0 else (float("inf") if numerator > 0 else float("nan"))
                which = content if ratio > 1 else style
                state["chosen"][name] = which
                module.set_adapter([which])
                module.set_scale(which, content_scale if which == content else style_scale)

            handles = [c_layers[name].register_forward_pre_hook(lambda m, a, name=name: choose(m, a, name)) for name in shared]
            for name, module in model.named_modules():  # layers one LoRA touches keep it, at its scale
                if hasattr(module, "lora_A") and name not in layers:
                    active = [a for a in (content, style) if a in module.lora_A]
                    module.set_adapter(active or [content])
                    for adapter, scale in ((content, content_scale), (style, style_scale)):
                        if adapter in module.lora_A:
                            module.set_scale(adapter, scale)
                    if not active:  # neither LoRA here: switch the layer's LoRA off
                        module.set_scale(content, 0.0)
            choices, samples = [], {}
            for step in range(STEPS):
                state["chosen"] = {}
                with torch.no_grad():
                    samples[f"sample_{step}"] = model(**inputs, return_dict=False)[0].to(torch.float32).contiguous()
                assert len(state["chosen"]) == len(shared)
                choices.append([name for name in shared if state["chosen"][name] == content])
            for handle in handles:
                handle.remove()
            for module in model.modules():  # restore full scales for the next setting
                if hasattr(module, "lora_A"):
                    for adapter in module.lora_A:
                        module.set_scale(adapter, 1.0)
            save_file(samples, str(OUT / f"{pair}-{pattern.replace('*', 'star')}.safetensors"))
            schedules[pattern] = dict(beta=beta, content_layers=choices)

        content_file = f"{fused}.safetensors" if fused else f"{content}.peft.safetensors"
        plans[pair] = dict(content=content_file, content_scale=content_scale, style=f"{style}.peft.safetensors",
                           style_scale=style_scale, gamma=gamma, alpha=ALPHA, steps=STEPS, order=shared,
                           layers=layers, schedules=schedules)
    (OUT / "plans.json").write_text(json.dumps(dict(call_order=order, pairs=plans), indent=1, sort_keys=True))
    (OUT / "README.md").write_text(__doc__)


if __name__ == "__main__":
    main()
