"""AutoLoRA gated-fusion reference from DiffSynth-Studio's own classes (diffsynth 2.1.12 on
PyPI, loaded by path so its heavy pipeline imports are not needed):
  - a tiny FLUX DiT built from DiffSynth's modules (FluxJointTransformerBlock,
    FluxSingleTransformerBlock, TimestepEmbeddings, RoPEEmbedding, AdaLayerNormContinuous;
    its FluxDiT class hard-codes FLUX.1's 3072 width), weights random with a fixed seed,
    written first under Black Forest Labs names and loaded into the DiT through DiffSynth's
    FluxDiTStateDictConverter (strict), so the BFL file is exactly what DiffSynth runs;
  - a FluxLoraPatcher for that DiT (one LoraMerger per LoRA-carrying layer, DiffSynth's
    layer names and fused widths) with every parameter random (not the initial values);
  - LoRAs in diffusers/peft naming, converted by DiffSynth's FluxLoRALoader.convert_state_dict
    (q, k, v fused with block-diagonal B; single blocks with the MLP part, zero when missing),
    applied as DiffSynth's hot-loaded Linears do: d_i = x·(alpha_i·A_i)ᵀ·B_iᵀ per LoRA that
    patches the layer, then the layer's merger: y = y0 + Σ w_out·g_i·d_i.
The forward follows diffsynth/pipelines/flux_image.py `model_fn_flux_image` (no ControlNet,
tiling or caches), in float64, on packed latents.
Writes Tests/Fixtures/autolora/{flux_bfl.safetensors, mergers.safetensors, lora_*.safetensors,
inputs.safetensors, expected_*.safetensors}.
Run: python3 Tools/reference/make_autolora_fixtures.py   (requirements.txt: diffsynth, einops)
"""
import importlib.util
import pathlib
import sys
import types

import torch
from safetensors.torch import save_file

ROOT = pathlib.Path(importlib.util.find_spec("diffsynth").submodule_search_locations[0])
for name, path in [("diffsynth", ROOT), ("diffsynth.models", ROOT / "models"), ("diffsynth.core", ROOT / "core"),
                   ("diffsynth.utils", ROOT / "utils"), ("diffsynth.utils.state_dict_converters", ROOT / "utils" / "state_dict_converters")]:
    package = types.ModuleType(name)
    package.__path__ = [str(path)]
    sys.modules[name] = package
stub = types.ModuleType("diffsynth.core.loader")
stub.load_state_dict = None  # flux_lora_patcher imports it; the classes used here do not call it
sys.modules["diffsynth.core.loader"] = stub
from diffsynth.models import flux_dit  # noqa: E402
from diffsynth.models.flux_lora_patcher import FluxLoRALoader, FluxLoraPatcher  # noqa: E402
from diffsynth.models.general_modules import TimestepEmbeddings  # noqa: E402
from diffsynth.utils.state_dict_converters.flux_dit import FluxDiTStateDictConverter  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "autolora"
HEADS, HEAD_DIM, AXES = 2, 16, (4, 6, 6)
DIM = HEADS * HEAD_DIM
LAYERS, SINGLE_LAYERS, IN_CHANNELS, JOINT, POOLED = 2, 2, 16, 24, 12
TEXT, GRID = 7, (3, 5)


def tiny_dit() -> torch.nn.Module:
    dit = flux_dit.FluxDiT.__new__(flux_dit.FluxDiT)
    torch.nn.Module.__init__(dit)
    dit.pos_embedder = flux_dit.RoPEEmbedding(DIM, 10000, list(AXES))
    dit.time_embedder = TimestepEmbeddings(256, DIM)
    dit.guidance_embedder = TimestepEmbeddings(256, DIM)
    dit.pooled_text_embedder = torch.nn.Sequential(torch.nn.Linear(POOLED, DIM), torch.nn.SiLU(), torch.nn.Linear(DIM, DIM))
    dit.context_embedder = torch.nn.Linear(JOINT, DIM)
    dit.x_embedder = torch.nn.Linear(IN_CHANNELS, DIM)
    dit.blocks = torch.nn.ModuleList([flux_dit.FluxJointTransformerBlock(DIM, HEADS) for _ in range(LAYERS)])
    dit.single_blocks = torch.nn.ModuleList([flux_dit.FluxSingleTransformerBlock(DIM, HEADS) for _ in range(SINGLE_LAYERS)])
    dit.final_norm_out = flux_dit.AdaLayerNormContinuous(DIM)
    dit.final_proj_out = torch.nn.Linear(DIM, IN_CHANNELS)
    return dit


def bfl_state(dit, generator) -> dict:
    """Random weights for every DiT parameter, under BFL names (via the converter's inverse)."""
    probe = {}
    names = {}
    # Name every BFL key by asking the converter where it lands.
    candidates = ["time_in.in_layer", "time_in.out_layer", "vector_in.in_layer", "vector_in.out_layer", "guidance_in.in_layer",
                  "guidance_in.out_layer", "txt_in", "img_in", "final_layer.linear", "final_layer.adaLN_modulation.1"]
    for index in range(LAYERS):
        candidates += [f"double_blocks.{index}.{part}" for part in
                       ["img_attn.proj", "img_attn.qkv", "img_mlp.0", "img_mlp.2", "img_mod.lin", "txt_attn.proj", "txt_attn.qkv",
                        "txt_mlp.0", "txt_mlp.2", "txt_mod.lin"]]
    for index in range(SINGLE_LAYERS):
        candidates += [f"single_blocks.{index}.{part}" for part in ["linear1", "linear2", "modulation.lin"]]
    for base in candidates:
        for kind in ("weight", "bias"):
            probe[f"{base}.{kind}"] = None
    for index in range(LAYERS):
        for side in ("img", "txt"):
            for norm in ("query_norm", "key_norm"):
                probe[f"double_blocks.{index}.{side}_attn.norm.{norm}.scale"] = None
    for index in range(SINGLE_LAYERS):
        for norm in ("query_norm", "key_norm"):
            probe[f"single_blocks.{index}.norm.{norm}.scale"] = None
    for bfl in probe:
        converted = FluxDiTStateDictConverter({bfl: torch.zeros(1)})
        assert len(converted) == 1, bfl
        names[bfl] = next(iter(converted))
    parameters = dict(dit.named_parameters())
    assert sorted(names.values()) == sorted(parameters), set(parameters) ^ set(names.values())
    state = {}
    for bfl, ours in names.items():
        shape = parameters[ours].shape
        if len(shape) == 2:
            state[bfl] = (torch.rand(shape, generator=generator) * 2 - 1) / shape[1] ** 0.5
        elif bfl.endswith(".scale"):
            state[bfl] = 1 + 0.2 * torch.randn(shape, generator=generator)
        else:
            state[bfl] = 0.1 * torch.randn(shape, generator=generator)
    return state


def lora(generator, rank, targets) -> dict:
    """A LoRA in diffusers naming on `targets` (diffusers module names), random A and B."""
    shapes = {}
    for index in range(LAYERS):
        block = f"transformer_blocks.{index}"
        for name in ["attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
                     "attn.to_out.0", "attn.to_add_out"]:
            shapes[f"{block}.{name}"] = (DIM, DIM)
        for stream in ("ff", "ff_context"):
            shapes[f"{block}.{stream}.net.0.proj"], shapes[f"{block}.{stream}.net.2"] = (4 * DIM, DIM), (DIM, 4 * DIM)
        shapes[f"{block}.norm1.linear"] = shapes[f"{block}.norm1_context.linear"] = (6 * DIM, DIM)
    for index in range(SINGLE_LAYERS):
        block = f"single_transformer_blocks.{index}"
        for name in ["attn.to_q", "attn.to_k", "attn.to_v"]:
            shapes[f"{block}.{name}"] = (DIM, DIM)
        shapes[f"{block}.proj_mlp"], shapes[f"{block}.proj_out"] = (4 * DIM, DIM), (DIM, 5 * DIM)
        shapes[f"{block}.norm.linear"] = (3 * DIM, DIM)
    state = {}
    for module, (out_features, in_features) in shapes.items():
        if not any(module.endswith(t) or f"{t}." in module + "." for t in targets):
            continue
        state[f"transformer.{module}.lora_A.weight"] = (torch.rand(rank, in_features, generator=generator) * 2 - 1) / in_features ** 0.5
        state[f"transformer.{module}.lora_B.weight"] = (torch.rand(out_features, rank, generator=generator) * 2 - 1) / rank ** 0.5
    return state


def attach(dit, patcher, loras):
    """DiffSynth's hot-loaded LoRA Linear with its merger, on every Linear a LoRA patches."""
    modules = dict(dit.named_modules())
    patched = {}
    for state, alpha in loras:
        converted = FluxLoRALoader().convert_state_dict({k: v.clone() for k, v in state.items()})
        for key, value in converted.items():
            if ".lora_B." not in key:
                continue
            name = key.split(".lora_B.")[0]
            down = converted[key.replace(".lora_B.", ".lora_A.")]
            patched.setdefault(name, []).append((down.double() * alpha, value.double()))
    for name, factors in patched.items():
        module = modules[name]
        merger = patcher.model_dict[name.replace(".", "___")]

        def forward(x, module=module, factors=factors, merger=merger):
            out = torch.nn.functional.linear(x, module.weight, module.bias)
            outputs = torch.stack([x @ down.T @ up.T for down, up in factors])
            return merger(out, outputs)
        module.forward = forward
    return patched


def run(dit, inputs):
    """diffsynth/pipelines/flux_image.py model_fn_flux_image, the plain path, on packed latents."""
    dtype = inputs["hidden_states"].dtype
    conditioning = dit.time_embedder(inputs["timestep"] * 1000, dtype) + dit.pooled_text_embedder(inputs["pooled_projections"])
    conditioning = conditioning + dit.guidance_embedder(inputs["guidance"] * 1000, dtype)
    hidden = dit.x_embedder(inputs["hidden_states"])
    prompt = dit.context_embedder(inputs["encoder_hidden_states"])
    rope = dit.pos_embedder(torch.cat((inputs["txt_ids"][None], inputs["img_ids"][None]), dim=1)).to(dtype)
    for block in dit.blocks:
        hidden, prompt = block(hidden, prompt, conditioning, rope, None)
    hidden = torch.cat([prompt, hidden], dim=1)
    for block in dit.single_blocks:
        hidden, prompt = block(hidden, prompt, conditioning, rope, None)
    hidden = hidden[:, prompt.shape[1]:]
    return dit.final_proj_out(dit.final_norm_out(hidden, conditioning))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(4242)
    dit = tiny_dit()
    state = bfl_state(dit, generator)
    dit.load_state_dict(FluxDiTStateDictConverter(state), strict=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(OUT / "flux_bfl.safetensors"),
              metadata={"axes_dims_rope": ",".join(map(str, AXES))})

    patterns = []
    for index in range(LAYERS):
        for side in ("a", "b"):
            patterns += [{"name": f"blocks.{index}.attn.{side}_to_qkv", "dim": 3 * DIM}, {"name": f"blocks.{index}.attn.{side}_to_out", "dim": DIM},
                         {"name": f"blocks.{index}.ff_{side}.0", "dim": 4 * DIM}, {"name": f"blocks.{index}.ff_{side}.2", "dim": DIM},
                         {"name": f"blocks.{index}.norm1_{side}.linear", "dim": 6 * DIM}]
    for index in range(SINGLE_LAYERS):
        patterns += [{"name": f"single_blocks.{index}.to_qkv_mlp", "dim": 7 * DIM}, {"name": f"single_blocks.{index}.proj_out", "dim": DIM},
                     {"name": f"single_blocks.{index}.norm.linear", "dim": 3 * DIM}]
    patcher = FluxLoraPatcher(patterns)
    with torch.no_grad():
        for name, parameter in patcher.named_parameters():
            base = 1.0 if name.endswith("norm_base.weight") or name.endswith("norm_lora.weight") else 0.0
            parameter.copy_(base + 0.5 * torch.randn(parameter.shape, generator=generator))
    save_file({k: v.contiguous() for k, v in patcher.state_dict().items()}, str(OUT / "mergers.safetensors"))

    # LoRA 1: every merger layer (q, k, v always together, as DiffSynth requires); LoRA 2:
    # attention and modulation only, no single-block MLP input (its part of the fused layer
    # is zero) and no feed-forward; LoRA 3: the text side's feed-forward only.
    everything = ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out", "ff.net.0.proj",
                  "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "norm1.linear", "norm1_context.linear", "proj_mlp",
                  "proj_out", "norm.linear"]
    loras = {"lora_1": lora(generator, 4, everything),
             "lora_2": lora(generator, 6, ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "norm1.linear", "norm.linear"]),
             "lora_3": lora(generator, 3, ["ff_context.net.0.proj", "ff_context.net.2"])}
    for name, tensors in loras.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / f"{name}.safetensors"))

    height, width = GRID
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    inputs = {"hidden_states": torch.randn(1, height * width, IN_CHANNELS, generator=generator),
              "encoder_hidden_states": torch.randn(1, TEXT, JOINT, generator=generator),
              "pooled_projections": torch.randn(1, POOLED, generator=generator), "timestep": torch.rand(1, generator=generator),
              "guidance": 1 + 4 * torch.rand(1, generator=generator), "img_ids": ids.reshape(-1, 3), "txt_ids": torch.zeros(TEXT, 3)}
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(OUT / "inputs.safetensors"))
    bound = {k: v.double() for k, v in inputs.items()}

    dit = dit.double()
    patcher = patcher.double()
    with torch.no_grad():
        save_file({"sample": run(dit, bound).float().contiguous()}, str(OUT / "expected_base.safetensors"))
    for output, chosen in [("expected_two", [("lora_1", 1.0), ("lora_2", 0.7)]),
                           ("expected_three", [("lora_1", 0.8), ("lora_2", -0.5), ("lora_3", 1.2)])]:
        fresh = tiny_dit().double()
        fresh.load_state_dict(dit.state_dict())
        attach(fresh, patcher, [(loras[name], alpha) for name, alpha in chosen])
        with torch.no_grad():
            save_file({"sample": run(fresh, bound).float().contiguous()}, str(OUT / f"{output}.safetensors"))
    (OUT / "README.md").write_text(__doc__ + "\nexpected_two: lora_1 at 1.0 + lora_2 at 0.7; "
                                   "expected_three: lora_1 at 0.8 + lora_2 at -0.5 + lora_3 at 1.2; expected_base: no LoRA.\n")


if __name__ == "__main__":
    main()
