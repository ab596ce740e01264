"""Small FLUX transformers for the DiT tests, built from configs with fixed seeds.

For each config: a diffusers FluxTransformer2DModel with every parameter re-initialised
at random (diffusers zero-initialises some, which would hide bugs), saved as a diffusers
folder in float32; inputs with non-square latent grids and text lengths that are not
powers of two; and the expected `sample` from the same weights run in float64.
Writes Tests/Fixtures/flux/<name>/{transformer/, inputs.safetensors, expected.safetensors}.
Run: python3 Tools/reference/make_flux_fixtures.py   (diffusers 0.31.0, torch 2.5.1)
"""
import json
import pathlib

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "flux"

CONFIGS = {
    # name: (model config, batch, text tokens, latent grid height x width (packed tokens))
    "dev-tiny": (dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12, guidance_embeds=True,
                      axes_dims_rope=(4, 6, 6)), 1, 7, (3, 5)),
    "schnell-tiny": (dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=3, attention_head_dim=8,
                          num_attention_heads=3, joint_attention_dim=20, pooled_projection_dim=10, guidance_embeds=False,
                          axes_dims_rope=(2, 2, 4)), 2, 5, (4, 3)),
    "dev-wide": (dict(patch_size=1, in_channels=12, num_layers=3, num_single_layers=1, attention_head_dim=32,
                      num_attention_heads=2, joint_attention_dim=40, pooled_projection_dim=16, guidance_embeds=True,
                      axes_dims_rope=(8, 12, 12)), 1, 11, (2, 6)),
}


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter random: linears ~ U(±1/√fan_in), norm weights near 1, biases small."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2:
                bound = 1.0 / parameter.shape[1] ** 0.5
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound)
            elif name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or "norm_added" in name:
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def to_bfl(state: dict, config: dict) -> dict:
    """The same weights under Black Forest Labs' names: fused qkv, single-block linear1
    (q, k, v, mlp), and the final modulation stored shift-then-scale."""
    s = {k: v.clone() for k, v in state.items()}
    out = {}
    def take(name):
        return s.pop(name)
    for src, dst in [("time_text_embed.timestep_embedder", "time_in"), ("time_text_embed.text_embedder", "vector_in"),
                     ("time_text_embed.guidance_embedder", "guidance_in")]:
        if f"{src}.linear_1.weight" not in s:
            continue
        for part, layer in [("linear_1", "in_layer"), ("linear_2", "out_layer")]:
            for kind in ("weight", "bias"):
                out[f"{dst}.{layer}.{kind}"] = take(f"{src}.{part}.{kind}")
    for kind in ("weight", "bias"):
        out[f"txt_in.{kind}"] = take(f"context_embedder.{kind}")
        out[f"img_in.{kind}"] = take(f"x_embedder.{kind}")
        out[f"final_layer.linear.{kind}"] = take(f"proj_out.{kind}")
        scale, shift = take(f"norm_out.linear.{kind}").chunk(2, dim=0)
        out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    for i in range(config["num_layers"]):
        d, b = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{b}.img_mod.lin.{kind}"] = take(f"{d}.norm1.linear.{kind}")
            out[f"{b}.txt_mod.lin.{kind}"] = take(f"{d}.norm1_context.linear.{kind}")
            out[f"{b}.img_attn.qkv.{kind}"] = torch.cat([take(f"{d}.attn.to_{x}.{kind}") for x in "qkv"])
            out[f"{b}.txt_attn.qkv.{kind}"] = torch.cat([take(f"{d}.attn.add_{x}_proj.{kind}") for x in "qkv"])
            out[f"{b}.img_attn.proj.{kind}"] = take(f"{d}.attn.to_out.0.{kind}")
            out[f"{b}.txt_attn.proj.{kind}"] = take(f"{d}.attn.to_add_out.{kind}")
            out[f"{b}.img_mlp.0.{kind}"] = take(f"{d}.ff.net.0.proj.{kind}")
            out[f"{b}.img_mlp.2.{kind}"] = take(f"{d}.ff.net.2.{kind}")
            out[f"{b}.txt_mlp.0.{kind}"] = take(f"{d}.ff_context.net.0.proj.{kind}")
            out[f"{b}.txt_mlp.2.{kind}"] = take(f"{d}.ff_context.net.2.{kind}")
        out[f"{b}.img_attn.norm.query_norm.scale"] = take(f"{d}.attn.norm_q.weight")
        out[f"{b}.img_attn.norm.key_norm.scale"] = take(f"{d}.attn.norm_k.weight")
        out[f"{b}.txt_attn.norm.query_norm.scale"] = take(f"{d}.attn.norm_added_q.weight")
        out[f"{b}.txt_attn.norm.key_norm.scale"] = take(f"{d}.attn.norm_added_k.weight")
    for i in range(config["num_single_layers"]):
        d, b = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{b}.modulation.lin.{kind}"] = take(f"{d}.norm.linear.{kind}")
            out[f"{b}.linear1.{kind}"] = torch.cat([take(f"{d}.attn.to_{x}.{kind}") for x in "qkv"] + [take(f"{d}.proj_mlp.{kind}")])
            out[f"{b}.linear2.{kind}"] = take(f"{d}.proj_out.{kind}")
        out[f"{b}.norm.query_norm.scale"] = take(f"{d}.attn.norm_q.weight")
        out[f"{b}.norm.key_norm.scale"] = take(f"{d}.attn.norm_k.weight")
    assert not s, f"unmapped: {sorted(s)}"
    return out


def image_ids(height: int, width: int) -> torch.Tensor:
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.reshape(height * width, 3)


def main() -> None:
    for index, (name, (config, batch, text_length, (height, width))) in enumerate(CONFIGS.items()):
        generator = torch.Generator().manual_seed(1000 + index)
        model = FluxTransformer2DModel(**config)
        randomise(model, generator)
        folder = OUT / name
        model.save_pretrained(folder / "transformer", safe_serialization=True)
        # The same weights as one BFL checkpoint; the rope axes cannot be read from shapes,
        # so they travel in the metadata (as a BFL-config-aware tool would pass them).
        bfl = {k: v.contiguous() for k, v in to_bfl(model.state_dict(), config).items()}
        save_file(bfl, str(folder / "flux_bfl.safetensors"),
                  metadata={"axes_dims_rope": ",".join(map(str, config["axes_dims_rope"]))})

        inner = config["num_attention_heads"] * config["attention_head_dim"]
        tokens = height * width
        inputs = {
            "hidden_states": torch.randn(batch, tokens, config["in_channels"], generator=generator),
            "encoder_hidden_states": torch.randn(batch, text_length, config["joint_attention_dim"], generator=generator),
            "pooled_projections": torch.randn(batch, config["pooled_projection_dim"], generator=generator),
            "timestep": torch.rand(batch, generator=generator),
            "img_ids": image_ids(height, width),
            "txt_ids": torch.zeros(text_length, 3),
        }
        if config["guidance_embeds"]:
            inputs["guidance"] = 1 + 4 * torch.rand(batch, generator=generator)
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / "inputs.safetensors"))

        reference = model.to(torch.float64)
        with torch.no_grad():
            sample = reference(**{k: v.to(torch.float64) for k, v in inputs.items()}, return_dict=False)[0]
        save_file({"sample": sample.to(torch.float32).contiguous()}, str(folder / "expected.safetensors"))
        (folder / "README.md").write_text(
            f"FLUX fixture `{name}`: {json.dumps(config)}; batch {batch}, {text_length} text tokens, "
            f"{height}x{width} latent grid ({tokens} image tokens), inner dim {inner}.\n"
            "Produced by Tools/reference/make_flux_fixtures.py (diffusers 0.31.0, torch 2.5.1): weights float32, "
            "expected `sample` from the same weights run in float64.\n")


if __name__ == "__main__":
    main()
