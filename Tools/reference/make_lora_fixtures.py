"""LoRA fixtures for the dev-tiny FLUX transformer (Tests/Fixtures/flux/dev-tiny), made with
peft + diffusers and run in float64.

LoRAs (peft LoraConfig on FluxTransformer2DModel, A and B both random and non-zero):
  all        rank 4, alpha 8, on every Linear of the model (attention, context attention,
             MLPs, single-block proj_mlp/proj_out, AdaLN linears, embedders, norm_out, proj_out)
  partial    rank 6, alpha 3, on the image-side attention, single-block proj_mlp and ff.net.2,
             with rank_pattern {proj_mlp: 3} and alpha_pattern {to_k: 5}
  attention  rank 5, alpha 10, on the attention projections only (q, k, v, out; both streams;
             single-block q, k, v and proj_out) — the layers XLabs files cover
Files (all under Tests/Fixtures/lora/):
  all.peft.safetensors, partial.peft.safetensors, attention.peft.safetensors — diffusers'
    `save_lora_weights` layout (`transformer.` prefix, lora_A/lora_B) with the peft config
    in the `lora_adapter_metadata` header entry as recent diffusers writes it
    (`transformer.r`, `transformer.lora_alpha`, `transformer.rank_pattern`, `transformer.alpha_pattern`).
  Conversions of the same weights (exact: the fused ΔW equals the separate ones):
  all.kohya.safetensors      kohya/sd-scripts names on BFL's fused layers; q, k, v (and the single
                             blocks' MLP) fused as A = [A_q; A_k; A_v(; A_mlp)], B = blockdiag(B_q, …),
                             `.alpha` = alpha · parts, so alpha/rank is unchanged; final modulation
                             rows in BFL's (shift, scale) order.
  all.bfl.safetensors        BFL module names with lora_A/lora_B, fused the same way, no alpha
                             stored: alpha/rank is folded into B (alpha defaults to the rank).
  attention.xlabs.safetensors  XLabs processor names (qkv_lora1/2, proj_lora1/2, single qkv_lora,
                             proj_lora), alpha/rank folded into B.
  attention.diffsynth.safetensors  DiffSynth-Studio names (blocks.N.attn.a_to_qkv…,
                             single_blocks.N.to_qkv_mlp with zero MLP rows), `.lora_A.default.weight`,
                             alpha/rank folded into B.
Expected outputs (float64 forward of the dev-tiny inputs, stored float32):
  expected_all.safetensors        `all` at scale 1
  expected_pair.safetensors       `all` at 0.7 and `partial` at -1.3 (set_adapters weights)
  expected_attention.safetensors  `attention` at scale 1
Run: python3 Tools/reference/make_lora_fixtures.py  (requirements.txt: torch, diffusers, peft)
"""
import json
import pathlib

import torch
from diffusers import FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures"
MODEL = ROOT / "flux" / "dev-tiny"
OUT = ROOT / "lora"

EVERY_LINEAR = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "norm1.linear",
                "norm1_context.linear", "norm.linear", "proj_mlp", "proj_out", "x_embedder", "context_embedder",
                "norm_out.linear", "linear_1", "linear_2"]
LORAS = {
    "all": dict(r=4, lora_alpha=8, target_modules=EVERY_LINEAR),
    "partial": dict(r=6, lora_alpha=3, rank_pattern={"proj_mlp": 3}, alpha_pattern={"to_k": 5},
                    target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_mlp", "ff.net.2"]),
    "attention": dict(r=5, lora_alpha=10, target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj",
                                                          "add_v_proj", "to_add_out", "single_transformer_blocks.0.proj_out",
                                                          "single_transformer_blocks.1.proj_out"]),
}


def load_model() -> FluxTransformer2DModel:
    return FluxTransformer2DModel.from_pretrained(MODEL / "transformer", torch_dtype=torch.float32)


def add_loras(model, generator):
    """Adds every LoRA with random, non-zero A and B; returns name → (config, state dict with `transformer.` keys)."""
    files = {}
    for name, options in LORAS.items():
        config = LoraConfig(init_lora_weights=False, **options)
        model.add_adapter(config, adapter_name=name)
        with torch.no_grad():
            for key, parameter in model.named_parameters():
                if f".{name}." not in key:
                    continue
                fan_in = parameter.shape[1]
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) / fan_in ** 0.5)
        state = get_peft_model_state_dict(model, adapter_name=name)
        files[name] = (options, {f"transformer.{k}": v.detach().clone().contiguous() for k, v in state.items()})
    return files


def metadata(options) -> dict:
    config = {"r": options["r"], "lora_alpha": options["lora_alpha"], "rank_pattern": options.get("rank_pattern", {}),
              "alpha_pattern": options.get("alpha_pattern", {}), "target_modules": sorted(options["target_modules"]),
              "use_rslora": False}
    return {"format": "pt", "lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()},
                                                                sort_keys=True)}


def modules(state):
    """module path (no prefix) → (A, B)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".lora_A.weight"):
            module = key[len("transformer."):-len(".lora_A.weight")]
            out[module] = (value, state[key.replace("lora_A", "lora_B")])
    return out


def alpha_of(options, module):
    for pattern, value in options.get("alpha_pattern", {}).items():
        if module == pattern or module.endswith("." + pattern):
            return value
    return options["lora_alpha"]


def fuse(parts, rows=None):
    """[(A, B, scale)] → A stacked, B block-diagonal (scale folded into B); rows pads B with zero rows."""
    a = torch.cat([p[0] for p in parts])
    width = sum(p[1].shape[0] for p in parts) if rows is None else rows
    b = torch.zeros(width, a.shape[0])
    row = col = 0
    for pa, pb, scale in parts:
        b[row:row + pb.shape[0], col:col + pa.shape[0]] = pb * scale
        row += pb.shape[0]
        col += pa.shape[0]
    return a.contiguous(), b.contiguous()


def bfl_modules(state, options, inner, mlp, layers, single_layers, shift_first=True):
    """BFL module name → (A, B with alpha/rank folded in), fused like BFL's checkpoint."""
    m = modules(state)
    scaled = {k: (a, b, alpha_of(options, k) / a.shape[0]) for k, (a, b) in m.items()}
    out = {}
    def whole(src, dst):
        if src in scaled:
            a, b, s = scaled[src]
            out[dst] = (a.contiguous(), (b * s).contiguous())
    for src, dst in [("time_text_embed.timestep_embedder", "time_in"), ("time_text_embed.text_embedder", "vector_in"),
                     ("time_text_embed.guidance_embedder", "guidance_in")]:
        whole(f"{src}.linear_1", f"{dst}.in_layer")
        whole(f"{src}.linear_2", f"{dst}.out_layer")
    whole("context_embedder", "txt_in")
    whole("x_embedder", "img_in")
    whole("proj_out", "final_layer.linear")
    if "norm_out.linear" in scaled:
        a, b, s = scaled["norm_out.linear"]
        scale_rows, shift_rows = (b * s).chunk(2)
        out["final_layer.adaLN_modulation.1"] = (a, torch.cat([shift_rows, scale_rows]).contiguous() if shift_first else b * s)
    for i in range(layers):
        d, k = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for src, dst in [("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                         ("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
                         ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"), ("ff_context.net.0.proj", "txt_mlp.0"),
                         ("ff_context.net.2", "txt_mlp.2")]:
            whole(f"{d}.{src}", f"{k}.{dst}")
        for names, dst in [(["attn.to_q", "attn.to_k", "attn.to_v"], "img_attn.qkv"),
                           (["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"], "txt_attn.qkv")]:
            if all(f"{d}.{n}" in scaled for n in names):
                out[f"{k}.{dst}"] = fuse([scaled[f"{d}.{n}"] for n in names])
    for i in range(single_layers):
        d, k = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        whole(f"{d}.norm.linear", f"{k}.modulation.lin")
        whole(f"{d}.proj_out", f"{k}.linear2")
        names = [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"]
        if all(n in scaled for n in names):
            parts = [scaled[n] for n in names] + ([scaled[f"{d}.proj_mlp"]] if f"{d}.proj_mlp" in scaled else [])
            out[f"{k}.linear1"] = fuse(parts, rows=3 * inner + mlp)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    config = json.loads((MODEL / "transformer" / "config.json").read_text())
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    mlp, layers, single_layers = 4 * inner, config["num_layers"], config["num_single_layers"]
    inputs = load_file(str(MODEL / "inputs.safetensors"))

    model = load_model()
    files = add_loras(model, torch.Generator().manual_seed(2024))
    for name, (options, state) in files.items():
        save_file(state, str(OUT / f"{name}.peft.safetensors"), metadata=metadata(options))

    # kohya: BFL modules, underscored, lora_down/lora_up/alpha with alpha/rank preserved.
    options, state = files["all"]
    kohya = {}
    for module, (a, b) in bfl_modules(state, options, inner, mlp, layers, single_layers).items():
        key = "lora_unet_" + module.replace(".", "_")
        rank = a.shape[0]
        alpha = float(options["lora_alpha"])  # scale alpha/r of the parts, as fused alpha/rank
        ratio = alpha / options["r"]
        kohya[f"{key}.lora_down.weight"] = a
        kohya[f"{key}.lora_up.weight"] = (b / ratio).contiguous()
        kohya[f"{key}.alpha"] = torch.tensor(ratio * rank, dtype=torch.float32)
    save_file(kohya, str(OUT / "all.kohya.safetensors"))

    # BFL names, peft factors, alpha folded into B.
    bfl = {}
    for module, (a, b) in bfl_modules(state, options, inner, mlp, layers, single_layers).items():
        bfl[f"{module}.lora_A.weight"], bfl[f"{module}.lora_B.weight"] = a, b.contiguous()
    save_file(bfl, str(OUT / "all.bfl.safetensors"))

    # XLabs and DiffSynth from the attention-only LoRA.
    options, state = files["attention"]
    fused = bfl_modules(state, options, inner, mlp, layers, single_layers)
    xlabs, diffsynth = {}, {}
    for module, (a, b) in fused.items():
        parts = module.split(".")
        block, index, rest = parts[0], parts[1], ".".join(parts[2:])
        if block == "double_blocks":
            x_name = {"img_attn.qkv": "qkv_lora1", "txt_attn.qkv": "qkv_lora2", "img_attn.proj": "proj_lora1",
                      "txt_attn.proj": "proj_lora2"}[rest]
            d_name = {"img_attn.qkv": "attn.a_to_qkv", "txt_attn.qkv": "attn.b_to_qkv", "img_attn.proj": "attn.a_to_out",
                      "txt_attn.proj": "attn.b_to_out"}[rest]
            xlabs[f"double_blocks.{index}.processor.{x_name}.down.weight"] = a
            xlabs[f"double_blocks.{index}.processor.{x_name}.up.weight"] = b
            diffsynth[f"blocks.{index}.{d_name}.lora_A.default.weight"] = a
            diffsynth[f"blocks.{index}.{d_name}.lora_B.default.weight"] = b
        else:
            if rest == "linear1":
                xlabs[f"single_blocks.{index}.processor.qkv_lora.down.weight"] = a
                xlabs[f"single_blocks.{index}.processor.qkv_lora.up.weight"] = b[:3 * inner].contiguous()
                d_name = "to_qkv_mlp"
            else:
                xlabs[f"single_blocks.{index}.processor.proj_lora.down.weight"] = a
                xlabs[f"single_blocks.{index}.processor.proj_lora.up.weight"] = b
                d_name = "proj_out"
            diffsynth[f"single_blocks.{index}.{d_name}.lora_A.default.weight"] = a
            diffsynth[f"single_blocks.{index}.{d_name}.lora_B.default.weight"] = b
    save_file(xlabs, str(OUT / "attention.xlabs.safetensors"))
    save_file(diffsynth, str(OUT / "attention.diffsynth.safetensors"))

    reference = model.to(torch.float64)
    bound = {k: v.to(torch.float64) for k, v in inputs.items()}
    for output, adapters, weights in [("expected_all", ["all"], [1.0]), ("expected_pair", ["all", "partial"], [0.7, -1.3]),
                                      ("expected_attention", ["attention"], [1.0])]:
        reference.set_adapters(adapters, weights=weights)
        with torch.no_grad():
            sample = reference(**bound, return_dict=False)[0]
        save_file({"sample": sample.to(torch.float32).contiguous()}, str(OUT / f"{output}.safetensors"))
    (OUT / "README.md").write_text(__doc__)


if __name__ == "__main__":
    main()
