"""FLUX transformers stored in fp8, as their users have them, made from the flux fixtures.

From Tests/Fixtures/flux/<name>/flux_bfl.safetensors (make_flux_fixtures.py) three single
files in Black Forest Labs' names, every 2-D Linear weight stored in float8:
  fp8/e4m3.safetensors    F8_E4M3 weights cast directly (as Kijai's `flux1-dev-fp8-e4m3fn`),
                          under ComfyUI's `model.diffusion_model.` prefix, vectors float32;
  fp8/e5m2.safetensors    F8_E5M2 weights cast directly, no prefix, vectors bfloat16;
  fp8/scaled.safetensors  ComfyUI's "scaled fp8": each weight divided by a per-tensor scale
                          (max |W| / 448) before the F8_E4M3 cast, the scale stored beside it
                          as `<layer>.scale_weight` (float32, shape []), the `scaled_fp8`
                          marker tensor, `model.diffusion_model.` prefix, vectors bfloat16.
The reference for each: the stored values widened exactly (times the scale), mapped back to
diffusers names by inverting make_flux_fixtures.to_bfl (the mapping that wrote flux_bfl from the
diffusers model; it only copies and concatenates, so it is inverted element by element;
diffusers' own `convert_flux_transformer_checkpoint_to_diffusers` assumes FLUX.1's width of
3072 and cannot read these tiny configs), loaded into the fixture's FluxTransformer2DModel and
run in float64 on the fixture's inputs: fp8/expected-<variant>.safetensors (`sample`).
Run: python3 Tools/reference/make_fp8_fixtures.py   (after make_flux_fixtures.py;
diffusers 0.31.0, torch with float8 dtypes)
"""
import json
import pathlib

import importlib.util

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import load_file, save_file

spec = importlib.util.spec_from_file_location("flux_fixtures", pathlib.Path(__file__).resolve().parent / "make_flux_fixtures.py")
flux_fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flux_fixtures)

FLUX = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "flux"
PREFIX = "model.diffusion_model."
E4M3_MAX = 448.0

VARIANTS = {
    # name: (fp8 dtype, scaled, prefix, vector dtype)
    "e4m3": (torch.float8_e4m3fn, False, PREFIX, torch.float32),
    "e5m2": (torch.float8_e5m2, False, "", torch.bfloat16),
    "scaled": (torch.float8_e4m3fn, True, PREFIX, torch.bfloat16),
}


def store(bfl: dict, fp8, scaled: bool, vector_dtype) -> tuple[dict, dict]:
    """(tensors as the file holds them, without prefix; the float64 values they stand for)."""
    stored, values = {}, {}
    for name, tensor in bfl.items():
        if tensor.dim() == 2 and name.endswith(".weight"):
            scale = tensor.abs().max().clamp(min=1e-12) / E4M3_MAX if scaled else None
            narrow = (tensor / scale if scaled else tensor).to(fp8)
            stored[name] = narrow
            value = narrow.to(torch.float64)
            if scaled:
                scale32 = scale.to(torch.float32).reshape(())
                stored[name[: -len(".weight")] + ".scale_weight"] = scale32
                value = value * scale32.to(torch.float64)
            values[name] = value
        else:
            stored[name] = tensor.to(vector_dtype)
            values[name] = stored[name].to(torch.float64)
    if scaled:
        stored["scaled_fp8"] = torch.empty(0, dtype=fp8)
    return stored, values


def from_bfl(values: dict, template: dict, config: dict) -> dict:
    """Diffusers-named tensors whose to_bfl image is `values`: to_bfl applied to tensors holding
    each element's own index says where every BFL element came from."""
    names = sorted(template)
    offsets, total = {}, 0
    for name in names:
        offsets[name] = total
        total += template[name].numel()
    indices = {name: torch.arange(offsets[name], offsets[name] + template[name].numel(), dtype=torch.float64)
               .reshape(template[name].shape) for name in names}
    flat = torch.full((total,), float("nan"), dtype=torch.float64)
    for name, index in flux_fixtures.to_bfl(indices, config).items():
        flat[index.flatten().long()] = values[name].flatten()
    assert not torch.isnan(flat).any()
    return {name: flat[offsets[name]:offsets[name] + template[name].numel()].reshape(template[name].shape) for name in names}


def main() -> None:
    for fixture in ("dev-tiny", "dev-wide"):
        folder = FLUX / fixture
        bfl = load_file(str(folder / "flux_bfl.safetensors"))
        inputs = load_file(str(folder / "inputs.safetensors"))
        config = json.loads((folder / "transformer" / "config.json").read_text())
        axes = ",".join(map(str, config["axes_dims_rope"]))
        (folder / "fp8").mkdir(exist_ok=True)
        for variant, (fp8, scaled, prefix, vector_dtype) in VARIANTS.items():
            stored, values = store(bfl, fp8, scaled, vector_dtype)
            save_file({prefix + k: v.contiguous() for k, v in stored.items()}, str(folder / "fp8" / f"{variant}.safetensors"),
                      metadata={"axes_dims_rope": axes})
            model = FluxTransformer2DModel.from_pretrained(folder / "transformer").to(torch.float64)
            model.load_state_dict(from_bfl(values, model.state_dict(), config), strict=True)
            with torch.no_grad():
                sample = model(**{k: v.to(torch.float64) for k, v in inputs.items()}, return_dict=False)[0]
            save_file({"sample": sample.to(torch.float32).contiguous()}, str(folder / "fp8" / f"expected-{variant}.safetensors"))
        (folder / "fp8" / "README.md").write_text(
            f"fp8 copies of `{fixture}`/flux_bfl.safetensors (e4m3, e5m2, ComfyUI scaled fp8) and the diffusers "
            "float64 `sample` of each on ../inputs.safetensors. Produced by Tools/reference/make_fp8_fixtures.py "
            f"(diffusers 0.31.0, torch {torch.__version__}).\n")


if __name__ == "__main__":
    main()
