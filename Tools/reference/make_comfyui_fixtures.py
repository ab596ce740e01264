"""ComfyUI's single-file layouts, made from fixtures the other scripts wrote (no new weights).

ComfyUI keeps the FLUX transformer under `model.diffusion_model.` with Black Forest Labs' names,
and its all-in-one checkpoints (CheckpointSave, the `flux1-dev-fp8` "checkpoint" files) hold every
part of the pipeline in one file: the transformer as above, CLIP-L under
`text_encoders.clip_l.transformer.` (transformers' names, `text_model.` included), T5-XXL under
`text_encoders.t5xxl.transformer.`, the VAE under `vae.` (BFL's `ae.safetensors` names). Neither
carries a config or a tokenizer.

Writes Tests/Fixtures/pipeline/flux-tiny-comfyui.safetensors: pipeline/flux-tiny-transformers5 as
one all-in-one file (its transformer converted to BFL names by make_flux_fixtures.to_bfl, its CLIP
and T5, and the VAE as pipeline/flux-tiny/ae.safetensors has it — the same weights as the folder's
vae/), with `ae.safetensors`'s `norm_num_groups` metadata. That pipeline's CLIP has one 64-wide head,
the width a reader must assume (a single file does not show CLIP's head count). The folder's
generate-dev.safetensors is its reference. (A transformer alone under `model.diffusion_model.` is
made by the Swift tests from flux/*/flux_bfl.safetensors: renaming needs no reference.)
Run: python3 Tools/reference/make_comfyui_fixtures.py   (after make_flux_fixtures.py and
make_transformers5_fixtures.py; diffusers 0.31.0, torch 2.5.1)
"""
import importlib.util
import json
import pathlib

import torch

from safetensors import safe_open
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "Tests" / "Fixtures"

spec = importlib.util.spec_from_file_location("flux_fixtures", HERE / "make_flux_fixtures.py")
flux_fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flux_fixtures)


def read(path):
    with safe_open(str(path), "pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}


def read_folder(folder, stem):
    tensors = {}
    for file in sorted(folder.glob(f"{stem}*.safetensors")):
        tensors.update(read(file)[0])
    return tensors


def main():
    pipeline = FIXTURES / "pipeline" / "flux-tiny-transformers5"
    config = json.loads((pipeline / "transformer" / "config.json").read_text())
    transformer = flux_fixtures.to_bfl(read_folder(pipeline / "transformer", "diffusion_pytorch_model"), config)
    # ComfyUI names CLIP-L as transformers 4 did (`text_model.` included); transformers 5 saved it without.
    clip = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in read_folder(pipeline / "text_encoder", "model").items()}
    t5 = read_folder(pipeline / "text_encoder_2", "model")
    vae, vae_metadata = read(FIXTURES / "pipeline" / "flux-tiny" / "ae.safetensors")
    folder_vae = read_folder(pipeline / "vae", "diffusion_pytorch_model")
    assert all(torch.equal(folder_vae[k], v) for k, v in read_folder(FIXTURES / "pipeline" / "flux-tiny" / "vae",
                                                                     "diffusion_pytorch_model").items())
    everything = {}
    for prefix, part in (("model.diffusion_model.", transformer), ("text_encoders.clip_l.transformer.", clip),
                         ("text_encoders.t5xxl.transformer.", t5), ("vae.", vae)):
        everything.update({prefix + k: v.contiguous() for k, v in part.items()})
    save_file(everything, str(FIXTURES / "pipeline" / "flux-tiny-comfyui.safetensors"), metadata=vae_metadata)
    print(f"all-in-one: {len(everything)} tensors; first CLIP key {sorted(clip)[0]}")


if __name__ == "__main__":
    main()
