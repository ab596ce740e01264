"""GGUF files for the reader and the dequantization, written by the `gguf` Python package
(llama.cpp's own writer) and dequantized by its `quants.dequantize`, the reference.

types.gguf: one tensor per type LoRAFuse reads, odd row counts, several blocks per row:
  F32, F16, BF16 (random normal values), Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (random normal values
  quantized by gguf's own `quants.quantize`), Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (random blocks:
  every byte random, the f16 super-block scales d/dmin set to finite random values; gguf
  quantizes no K-type itself); plus a rank-1 and a rank-3 tensor; and metadata of every value
  type (integers of each width, floats, bool, string, arrays, an array of arrays).
aligned64.gguf: two tensors with `general.alignment` 64.
expected.safetensors: every tensor of both files dequantized to float32 by gguf, same names
(aligned64's prefixed `aligned64.`), in the shape PyTorch would give it (GGUF's extents reversed).
Run: python3 Tools/reference/make_gguf_fixtures.py   (gguf 0.19.0, numpy 2.4.6)
"""
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, GGUFValueType
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "gguf"
rng = np.random.default_rng(20261203)

# K-quant block bytes and the offsets of their f16 scales (ggml-common.h).
K_TYPES = {T.Q2_K: (84, [80, 82]), T.Q3_K: (110, [108]), T.Q4_K: (144, [0, 2]), T.Q5_K: (176, [0, 2]), T.Q6_K: (210, [208])}


def random_k_blocks(qtype, rows: int, blocks_per_row: int) -> np.ndarray:
    size, scale_offsets = K_TYPES[qtype]
    data = rng.integers(0, 256, size=(rows * blocks_per_row, size), dtype=np.uint8)
    for offset in scale_offsets:
        scales = (rng.standard_normal(rows * blocks_per_row) * 0.02).astype(np.float16)
        data[:, offset:offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return data.reshape(rows, blocks_per_row * size)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    writer = GGUFWriter(str(OUT / "types.gguf"), "flux")
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -100)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4_000_000_000)
    writer.add_int32("test.i32", -2_000_000_000)
    writer.add_uint64("test.u64", 2**63 + 5)
    writer.add_int64("test.i64", -(2**62))
    writer.add_float32("test.f32", 0.25)
    writer.add_float64("test.f64", -1.5e300)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "zorbo ✓")
    writer.add_array("test.strings", ["a", "bc", ""])
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_key_value("test.nested", [[1, 2], [3]], GGUFValueType.ARRAY, sub_type=GGUFValueType.ARRAY)

    def add(name, stored, qtype, values):
        writer.add_tensor(name, stored, raw_dtype=qtype)
        expected[name] = np.ascontiguousarray(values.astype(np.float32))

    for name, qtype, dtype in (("plain.f32", T.F32, np.float32), ("plain.f16", T.F16, np.float16)):
        values = rng.standard_normal((5, 7)).astype(dtype)
        add(name, values, qtype, values.astype(np.float32))
    bf16 = quantize(rng.standard_normal((3, 9)).astype(np.float32), T.BF16)
    add("plain.bf16", bf16, T.BF16, dequantize(bf16, T.BF16))
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        stored = quantize(rng.standard_normal((3, 96)).astype(np.float32), qtype)
        add(f"quant.{qtype.name.lower()}", stored, qtype, dequantize(stored, qtype))
    for qtype in K_TYPES:
        stored = random_k_blocks(qtype, 3, 2)
        add(f"quant.{qtype.name.lower()}", stored, qtype, dequantize(stored, qtype))
    vector = quantize(rng.standard_normal(64).astype(np.float32), T.Q8_0)
    add("shape.rank1", vector, T.Q8_0, dequantize(vector, T.Q8_0))
    cube = rng.standard_normal((2, 3, 32)).astype(np.float16)
    add("shape.rank3", cube, T.F16, cube.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    writer = GGUFWriter(str(OUT / "aligned64.gguf"), "flux")
    writer.add_custom_alignment(64)
    for name, qtype in (("a", T.Q4_0), ("b", T.Q8_0)):
        stored = quantize(rng.standard_normal((1, 32)).astype(np.float32), qtype)
        writer.add_tensor(name, stored, raw_dtype=qtype)
        expected[f"aligned64.{name}"] = dequantize(stored, qtype).astype(np.float32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, str(OUT / "expected.safetensors"))


if __name__ == "__main__":
    main()
