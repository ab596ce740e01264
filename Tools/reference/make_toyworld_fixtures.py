"""Reference outputs for the bundled toy world (Examples/toyworld), for Tests/BackendTests/ToyWorldTests.swift.

Run after Tools/toyworld/train_world.py. Writes Tests/Fixtures/toyworld/:
- generate.safetensors  diffusers' FluxPipeline on the world's pipeline in float64 with a content LoRA loaded by
                        diffusers (load_lora_weights, scale 1), imported noise (`noise` [1, 16, 8, 8]), the world's
                        steps and T5 length: `latents` (unpacked, after the last step) and `image` [32, 32, 3] uint8;
- classifier.safetensors  world images (`pixels` [N, 32, 32, 3] uint8) and every classifier's probabilities
                        (judge A `object`, `style`; judge B `object-b`, `style-b` [N, 18]) from the PyTorch class in
                        float64 (`--only classifier` writes this file alone);
- autolora.safetensors  one transformer forward (inputs as `lorafuse dit` takes them, float64) with a content and
                        a style LoRA gated by the world's AutoLoRA merger, through the training script's gated model
                        (`sample`); the same math as DiffSynth's LoraMerger, which Tests/Fixtures/autolora checks
                        LoRAFuse against.
(torch 2.5.1, diffusers 0.31.0, transformers 4.46.3, peft 0.13.2)
"""
import json
import pathlib
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Tools" / "toyworld"))
import train_world as tw  # noqa: E402
import world  # noqa: E402

WORLD = ROOT / "Examples" / "toyworld"
OUT = ROOT / "Tests" / "Fixtures" / "toyworld"
CONTENT_LORA = "loras/content-zorbo.safetensors"
STYLE_LORA = "loras/style-dobrel.safetensors"


def generate_fixture(manifest):
    from diffusers import FluxPipeline
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # CLIP's causal mask is built in the default dtype
    try:
        pipe = FluxPipeline.from_pretrained(str(WORLD / "pipeline"), torch_dtype=torch.float64)
        pipe.load_lora_weights(str(WORLD / CONTENT_LORA), adapter_name="content")
        pipe.transformer.double()
        prompt = "a zorbo in dobrel style"
        size, steps, length = manifest["width"], manifest["steps"], manifest["max_sequence_length"]
        noise = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float32)
        packed = FluxPipeline._pack_latents(noise.double(), 1, 16, 8, 8)
        with torch.no_grad():
            latents = pipe(prompt, height=size, width=size, num_inference_steps=steps, latents=packed, max_sequence_length=length,
                           output_type="latent").images
            image = pipe(prompt, height=size, width=size, num_inference_steps=steps, latents=packed, max_sequence_length=length,
                         output_type="np").images[0]
        latents = FluxPipeline._unpack_latents(latents, size, size, pipe.vae_scale_factor)
        pixels = torch.from_numpy((image * 255).round().astype("uint8")).contiguous()
        save_file({"noise": noise, "latents": latents.float().contiguous(), "image": pixels}, str(OUT / "generate.safetensors"),
                  metadata=dict(prompt=prompt, lora=CONTENT_LORA, steps=str(steps), size=str(size), max_sequence_length=str(length)))
        print(f"generate: image mean {pixels.float().mean():.1f}")
    finally:
        torch.set_default_dtype(previous)


def classifier_fixture():
    rng = np.random.default_rng(77)
    samples = [world.classifier_sample(rng) for _ in range(6)]
    pixels = np.stack([(s[0].transpose(1, 2, 0) * 255).round().astype(np.uint8) for s in samples])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).double() / 127.5 - 1
    out = {"pixels": torch.from_numpy(np.ascontiguousarray(pixels)).contiguous()}
    for name in ("object", "style", "object-b", "style-b"):  # judge A, then judge B
        state = load_file(str(WORLD / "classifiers" / f"{name}.safetensors"))
        widths = tuple(state[f"conv{i}.weight"].shape[0] for i in (1, 2, 3))
        model = tw.Classifier(state["head.bias"].shape[0], widths)
        model.load_state_dict(state)
        with torch.no_grad():
            out[name] = torch.softmax(model.double()(x), dim=-1).float()
    save_file(out, str(OUT / "classifier.safetensors"))
    print("classifier: labels", [(world.ALL_SHAPES[s[1]], world.ALL_TEXTURES[s[2]]) for s in samples])


def autolora_fixture():
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(21)
    model = FluxTransformer2DModel.from_pretrained(str(WORLD / "pipeline" / "transformer")).double()
    modules = dict(model.named_modules())
    mergers = torch.nn.ModuleDict({name.replace(".", "___"): tw.Merger(sum(modules[m].out_features for m in members))
                                   for name, members in tw.merger_groups(model).items()})
    state = load_file(str(WORLD / "autolora-merger.safetensors"))
    mergers.load_state_dict({k[len("model_dict."):]: v for k, v in state.items()})
    mergers.double()
    groups = tw.patch_for_merging(model, mergers)
    names = [CONTENT_LORA, STYLE_LORA]
    for name in names:
        tw.attach_lora(groups, name, WORLD / name)
    for group in groups.values():
        group.active = names
        for key, parts in group.loras.items():
            group.loras[key] = [(p[0].double(), p[1].double(), p[2]) if p else None for p in parts]
    inputs = dict(hidden_states=torch.randn(1, 16, 64), encoder_hidden_states=torch.randn(1, 24, 64),
                  pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.6]), img_ids=tw.image_ids(8, 8),
                  txt_ids=torch.zeros(24, 3))
    with torch.no_grad():
        sample = model(**{k: v.double() for k, v in inputs.items()}, return_dict=False)[0]
    save_file({**{k: v.float().contiguous() for k, v in inputs.items()}, "sample": sample.float().contiguous()},
              str(OUT / "autolora.safetensors"), metadata={"loras": json.dumps(names), "merger": "autolora-merger.safetensors"})
    print(f"autolora: |sample| mean {sample.abs().mean():.4f}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((WORLD / "world.json").read_text())
    classifier_fixture()
    if sys.argv[1:] == ["--only", "classifier"]:  # after a judges-only retraining
        return
    autolora_fixture()
    generate_fixture(manifest)


if __name__ == "__main__":
    main()
