"""FLUX transformers as GGUF files, as city96 and stable-diffusion.cpp write them (BFL tensor
names, no prefix, general.architecture "flux"), made from Tests/Fixtures/flux/dev-tiny/flux_bfl.safetensors
by the `gguf` package's writer:
  gguf/f16.gguf           every 2-D weight F16, vectors F32 (city96's F16 files);
  gguf/bf16.gguf          everything BF16;
  gguf/q8_0.gguf          2-D weights whose rows are whole 32-value blocks in Q8_0 (quantized by
                          gguf itself), the others F16, vectors F32 (city96's Q8_0 layout).
`axes_dims_rope` ("4,6,6") travels in the metadata, as for flux_bfl.safetensors.
The reference for each, gguf/expected-<variant>.safetensors (`sample`): diffusers in float64 on
the stored values widened (gguf's `quants.dequantize` for Q8_0), mapped back to diffusers names
by make_fp8_fixtures.from_bfl.
Run: python3 Tools/reference/make_gguf_flux_fixtures.py   (after make_flux_fixtures.py;
gguf 0.19.0, diffusers 0.31.0, torch)
"""
import importlib.util
import json
import pathlib

import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from gguf import GGMLQuantizationType as T, GGUFWriter
from gguf.quants import dequantize, quantize
from safetensors.torch import load_file, save_file

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("fp8_fixtures", HERE / "make_fp8_fixtures.py")
fp8_fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fp8_fixtures)
FOLDER = HERE.parents[1] / "Tests" / "Fixtures" / "flux" / "dev-tiny"


def stored(variant: str, name: str, tensor: torch.Tensor):
    """(array for the writer, raw type or None, float64 value)."""
    array = tensor.numpy().astype(np.float32)
    matrix = tensor.dim() == 2
    if variant == "bf16":
        raw = quantize(array, T.BF16)
        return raw, T.BF16, dequantize(raw, T.BF16)
    if matrix and variant == "q8_0" and array.shape[-1] % 32 == 0:
        raw = quantize(array, T.Q8_0)
        return raw, T.Q8_0, dequantize(raw, T.Q8_0)
    if matrix:
        half = array.astype(np.float16)
        return half, None, half.astype(np.float32)
    return array, None, array


def main() -> None:
    bfl = load_file(str(FOLDER / "flux_bfl.safetensors"))
    inputs = load_file(str(FOLDER / "inputs.safetensors"))
    config = json.loads((FOLDER / "transformer" / "config.json").read_text())
    out = FOLDER / "gguf"
    out.mkdir(exist_ok=True)
    for variant in ("f16", "bf16", "q8_0"):
        writer = GGUFWriter(str(out / f"{variant}.gguf"), "flux")
        writer.add_string("axes_dims_rope", ",".join(map(str, config["axes_dims_rope"])))
        values = {}
        for name, tensor in bfl.items():
            array, raw, value = stored(variant, name, tensor)
            writer.add_tensor(name, array, raw_dtype=raw)
            values[name] = torch.from_numpy(np.asarray(value, dtype=np.float64).reshape(tensor.shape))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        model = FluxTransformer2DModel.from_pretrained(FOLDER / "transformer").to(torch.float64)
        model.load_state_dict(fp8_fixtures.from_bfl(values, model.state_dict(), config), strict=True)
        with torch.no_grad():
            sample = model(**{k: v.to(torch.float64) for k, v in inputs.items()}, return_dict=False)[0]
        save_file({"sample": sample.to(torch.float32).contiguous()}, str(out / f"expected-{variant}.safetensors"))
    (out / "README.md").write_text(
        "dev-tiny's BFL checkpoint as GGUF files (F16, BF16, Q8_0 with F16 where rows are not whole blocks) and the "
        "diffusers float64 `sample` of each on ../inputs.safetensors. Produced by Tools/reference/make_gguf_flux_fixtures.py.\n")


if __name__ == "__main__":
    main()
