"""Writes Tests/Fixtures/safetensors/torch_written.safetensors with torch + safetensors
(the files users have come from there) and torch_written.json with every tensor's name,
dtype, shape and values as torch reads them back, so the Swift reader is checked against
the reference writer. Run: python3 Tools/reference/make_safetensors_fixtures.py
"""
import json
import math
import pathlib

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "safetensors"


def main() -> None:
    generator = torch.Generator().manual_seed(1234)
    base = torch.randn(3, 5, generator=generator, dtype=torch.float64) * 10
    specials = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 1e-7, 6.1e-5, float("inf"), float("-inf"), float("nan")])
    tensors = {
        "transformer_blocks.0.attn.to_q.weight": base.to(torch.bfloat16),
        "transformer_blocks.0.attn.to_q.bias": base[0].to(torch.float16),
        "specials.f16": specials.to(torch.float16),
        "specials.bf16": specials.to(torch.bfloat16),
        "specials.f32": specials.to(torch.float32),
        "weights.f64": base,
        "fp8.e4m3": (base / 4).to(torch.float8_e4m3fn),
        "fp8.e5m2": (base / 4).to(torch.float8_e5m2),
        "ids.i64": torch.tensor([[0, 49406, -7], [2**40, 5, 6]], dtype=torch.int64),
        "ids.i32": torch.tensor([1, -2, 3], dtype=torch.int32),
        "mask.u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "mask.bool": torch.tensor([True, False, True]),
        "small.i8": torch.tensor([-128, 127], dtype=torch.int8),
        "small.i16": torch.tensor([-300, 300], dtype=torch.int16),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
    }
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8})}
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "torch_written.safetensors"), metadata=metadata)

    def value(x: float) -> str:
        # Hex floats are exact, and Swift's Double(String) reads them (and nan/inf) directly.
        return float(x).hex() if math.isfinite(x) else str(x)

    described = []
    for name, tensor in tensors.items():
        widened = tensor.to(torch.float64).flatten().tolist() if tensor.dtype != torch.int64 else tensor.flatten().tolist()
        described.append({
            "name": name,
            "dtype": str(tensor.dtype).replace("torch.", ""),
            "shape": list(tensor.shape),
            "values": [value(float(x)) for x in widened],
        })
    names = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32",
             "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
    for item in described:
        item["dtype"] = names[item["dtype"]]
    (OUT / "torch_written.json").write_text(json.dumps({"metadata": metadata, "tensors": described}, indent=1) + "\n")


if __name__ == "__main__":
    main()
