"""A complete tiny FLUX pipeline and diffusers' generations with it, for the text-to-image tests.

Run after make_text_encoder_fixtures.py, which writes the text half of
Tests/Fixtures/pipeline/flux-tiny/ (text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/).
This script adds, with every parameter random (fixed seeds):
- transformer/   FluxTransformer2DModel (guidance-distilled, like FLUX.1-dev), F32;
- vae/           AutoencoderKL with FLUX's layout at small widths (4 latent channels, blocks 8/16,
                 GroupNorm(4), mid-block attention, no quant convs, scale 0.3611, shift 0.1159), F32;
- scheduler/     FLUX's FlowMatchEulerDiscreteScheduler config (dynamic shifting);
- ae.safetensors the same VAE under Black Forest Labs' names (ComfyUI's single file);
- transformer-schnell/  a second transformer without guidance (FLUX.1-schnell's kind);
`lora-tiny.safetensors` (a rank-4 peft LoRA on transformer/'s attention and MLP Linears, random A and B,
diffusers' file layout), and Tests/Fixtures/pipeline/generate-<name>.safetensors (`dev-lora`: with that
LoRA at weight 0.8 through peft's set_adapters): diffusers' FluxPipeline run in float64
with imported noise (`noise` [1, 4, H/2, W/2], unpacked), the latents after every step
(`latents_<i>`, unpacked), the VAE's raw output for the last latents (`decoded` [1, 3, H, W]; `decoded_tiled_16` with
diffusers' tiled decoding at 16-pixel tiles) and
the uint8 image as diffusers' postprocess makes it (`image` [H, W, 3]); prompt and settings in
the metadata.
Run: python3 Tools/reference/make_pipeline_fixtures.py   (diffusers 0.31.0, transformers 4.46.3, torch 2.5.1)
"""
import json
import pathlib

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "pipeline"
PIPELINE = ROOT / "flux-tiny"

VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
           norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
           scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, sample_size=32)
TRANSFORMERS = {
    "transformer": dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
                        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
                        axes_dims_rope=(2, 2, 4)),
    "transformer-schnell": dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=1, attention_head_dim=8,
                                num_attention_heads=3, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=False,
                                axes_dims_rope=(2, 2, 4)),
}
SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, num_train_timesteps=1000,
                 shift=3.0, use_dynamic_shifting=True)
# name: (transformer folder, prompt, height, width, steps, guidance, noise seed, LoRA scale or None)
RUNS = {
    "dev": ("transformer", "a red star with stripes", 32, 48, 4, 3.5, 42, None),
    "schnell": ("transformer-schnell", "a blue circle, café 🐱", 48, 32, 4, 0.0, 7, None),
    "dev-lora": ("transformer", "a red star with stripes", 32, 48, 4, 3.5, 42, 0.8),
}
# A rank-4 peft LoRA (random A and B) on the attention and MLP Linears of transformer/.
LORA = dict(r=4, lora_alpha=6, target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                               "to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                                               "ff_context.net.2", "proj_mlp", "proj_out"])


def add_lora(transformer):
    """Adds LORA as adapter `tiny` with random non-zero factors; writes it in diffusers' file layout."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    transformer.add_adapter(LoraConfig(init_lora_weights=False, **LORA), adapter_name="tiny")
    generator = torch.Generator().manual_seed(77)
    with torch.no_grad():
        for key, parameter in transformer.named_parameters():
            if ".tiny." in key:
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) / parameter.shape[1] ** 0.5)
    state = get_peft_model_state_dict(transformer, adapter_name="tiny")
    config = {"r": LORA["r"], "lora_alpha": LORA["lora_alpha"], "target_modules": sorted(LORA["target_modules"]), "use_rslora": False}
    save_file({f"transformer.{k}": v.detach().float().clone().contiguous() for k, v in state.items()}, str(ROOT / "lora-tiny.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()})})


def randomise(model, generator):
    """Every parameter random: matrices and conv kernels ~ U(±1/√fan_in), norm weights near 1,
    biases small (diffusers zero-initialises some, which would hide bugs)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim >= 2:
                fan_in = parameter[0].numel()
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) / fan_in ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def to_bfl(state):
    """diffusers AutoencoderKL decoder names → Black Forest Labs' `ae.safetensors` names."""
    ups = len(VAE["block_out_channels"])
    out = {}
    for name, value in state.items():
        if not name.startswith("decoder."):
            continue
        parts = name.split(".")
        mapped = []
        i = 0
        while i < len(parts):
            p = parts[i]
            if p == "mid_block":
                kind, number = parts[i + 1], int(parts[i + 2])
                mapped += ["mid", f"block_{number + 1}" if kind == "resnets" else "attn_1"]
                i += 3
                continue
            if p == "up_blocks":
                mapped += ["up", str(ups - 1 - int(parts[i + 1]))]
                i += 2
                continue
            if p == "upsamplers":
                mapped.append("upsample")
                i += 2
                continue
            if p == "to_out":
                mapped.append("proj_out")
                i += 2
                continue
            mapped.append({"resnets": "block", "conv_shortcut": "nin_shortcut", "group_norm": "norm", "to_q": "q",
                           "to_k": "k", "to_v": "v", "conv_norm_out": "norm_out"}.get(p, p))
            i += 1
        if mapped[-2] in ("q", "k", "v", "proj_out") and value.ndim == 2:
            value = value[:, :, None, None]  # BFL's attention projections are 1×1 convolutions
        out[".".join(mapped)] = value.contiguous()
    return out


def main():
    generator = torch.Generator().manual_seed(500)
    vae = AutoencoderKL(**VAE)
    randomise(vae, generator)
    vae.save_pretrained(str(PIPELINE / "vae"), safe_serialization=True)
    # GroupNorm's groups are not visible in shapes; FLUX's 32 would not divide these widths.
    save_file(to_bfl(vae.state_dict()), str(PIPELINE / "ae.safetensors"), metadata={"norm_num_groups": str(VAE["norm_num_groups"])})
    for folder, config in TRANSFORMERS.items():
        model = FluxTransformer2DModel(**config)
        randomise(model, generator)
        model.save_pretrained(str(PIPELINE / folder), safe_serialization=True)
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    scheduler.save_pretrained(str(PIPELINE / "scheduler"))
    (PIPELINE / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxPipeline", "_diffusers_version": "0.31.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=1))

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # CLIP's causal mask is built in the default dtype
    try:
        for name, (folder, prompt, height, width, steps, guidance, seed, lora_scale) in RUNS.items():
            pipe = FluxPipeline(
                scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(str(PIPELINE / "scheduler")),
                vae=AutoencoderKL.from_pretrained(str(PIPELINE / "vae")).double().eval(),
                text_encoder=CLIPTextModel.from_pretrained(str(PIPELINE / "text_encoder")).double().eval(),
                tokenizer=CLIPTokenizer.from_pretrained(str(PIPELINE / "tokenizer")),
                text_encoder_2=T5EncoderModel.from_pretrained(str(PIPELINE / "text_encoder_2")).double().eval(),
                tokenizer_2=T5TokenizerFast.from_pretrained(str(PIPELINE / "tokenizer_2")),
                transformer=FluxTransformer2DModel.from_pretrained(str(PIPELINE / folder)).double().eval())
            if lora_scale is not None:
                add_lora(pipe.transformer)
                pipe.transformer.set_adapters(["tiny"], weights=[lora_scale])
                pipe.transformer.double()
            channels = VAE["latent_channels"]
            latent_height, latent_width = 2 * (height // pipe.vae_scale_factor), 2 * (width // pipe.vae_scale_factor)
            noise = torch.randn((1, channels, latent_height, latent_width), generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float32)
            packed = FluxPipeline._pack_latents(noise.double(), 1, channels, latent_height, latent_width)
            recorded = {}

            def record(pipeline, step, timestep, kwargs):
                latents = FluxPipeline._unpack_latents(kwargs["latents"], height, width, pipeline.vae_scale_factor)
                recorded[f"latents_{step}"] = latents.float().contiguous()
                return {}

            with torch.no_grad():
                image = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                             latents=packed, max_sequence_length=48, output_type="np",
                             callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents"]).images[0]
                last = FluxPipeline._unpack_latents(
                    FluxPipeline._pack_latents(recorded[f"latents_{steps - 1}"].double(), 1, channels, latent_height, latent_width),
                    height, width, pipe.vae_scale_factor)
                decoded = pipe.vae.decode(last / VAE["scaling_factor"] + VAE["shift_factor"], return_dict=False)[0]
                # Tiled decoding with 16-pixel tiles (4-pixel blends), as enable_tiling() runs it.
                pipe.vae.enable_tiling()
                pipe.vae.tile_sample_min_size = 16
                pipe.vae.tile_latent_min_size = 16 // 2 ** (len(VAE["block_out_channels"]) - 1)
                tiled = pipe.vae.decode(last / VAE["scaling_factor"] + VAE["shift_factor"], return_dict=False)[0]
                pipe.vae.disable_tiling()
            pixels = torch.from_numpy((image * 255).round().astype("uint8")).contiguous()
            save_file({"noise": noise, **recorded, "decoded": decoded.float().contiguous(),
                       "decoded_tiled_16": tiled.float().contiguous(), "image": pixels},
                      str(ROOT / f"generate-{name}.safetensors"),
                      metadata=dict(prompt=prompt, transformer=folder, height=str(height), width=str(width), steps=str(steps),
                                    guidance=str(guidance), max_sequence_length="48",
                                    **({"lora": "lora-tiny.safetensors", "lora_scale": str(lora_scale)} if lora_scale else {})))
            print(f"{name}: image {tuple(pixels.shape)}, mean {pixels.float().mean():.1f}")
    finally:
        torch.set_default_dtype(previous)

    (PIPELINE / "README.md").write_text(
        "# flux-tiny\n\nA complete tiny FLUX pipeline in diffusers' layout, every parameter random: `text_encoder/` "
        "(CLIPTextModel, BF16, the real CLIP vocabulary), `text_encoder_2/` (T5EncoderModel, F32, sharded with an index), "
        "`tokenizer/`, `tokenizer_2/` (make_text_encoder_fixtures.py); `transformer/` (guidance-distilled), "
        "`transformer-schnell/` (no guidance), `vae/` (AutoencoderKL, 4 latent channels, blocks 8/16), `scheduler/`, "
        "`ae.safetensors` (the VAE under BFL names) (make_pipeline_fixtures.py). `expected_<label>.safetensors`: "
        "`FluxPipeline.encode_prompt(prompt, max_sequence_length=48)` in float64. "
        "`../generate-<name>.safetensors`: whole generations by diffusers' FluxPipeline in float64. "
        "Random weights draw noise: these check arithmetic, not pictures.\n")


if __name__ == "__main__":
    main()
