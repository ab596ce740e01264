"""A FLUX.1-dev-shaped transformer with random weights, as one BFL-named safetensors file,
written tensor by tensor (the whole model is never in memory), and inputs for `lorafuse dit`.

19 double + 38 single blocks, width 3072 (24 heads of 128), MLP 12288, joint 4096, pooled 768,
in/out 64 channels, guidance: 11.9 B parameters. Linear weights in fp8 (F8_E4M3, values
N(0, 0.02) cast; `--scaled` stores them as ComfyUI's scaled fp8, with a `scale_weight` per
tensor) or BF16; vectors (biases, norm scales) BF16. Never committed: 11.9 GB in fp8.
`--dtype q8_0|q4_0|q4_k` writes a GGUF file as city96's FLUX GGUFs are laid out instead (BFL
names, Linear weights block-quantized where their rows are whole blocks, else F16; vectors
F32): Q8_0 and Q4_0 quantized by the `gguf` package from the same N(0, 0.02) values, Q4_K as
random blocks with small finite scales (gguf quantizes no K-type), 12.7 / 6.7 / 6.7 GB.
  usage: python3 Tools/bench/make_flux_dev_file.py OUT [--dtype fp8|bf16|q8_0|q4_0|q4_k] [--scaled]
             [--prefix model.diffusion_model.] [--inputs INPUTS.safetensors --image-tokens 256 --text-tokens 64]
Needs torch (float8 dtypes), numpy, and gguf for the GGUF types.
"""
import argparse
import json
import struct

import numpy as np
import torch

WIDTH, MLP, HEAD, JOINT, POOLED, CHANNELS, DOUBLE, SINGLE = 3072, 12288, 128, 4096, 768, 64, 19, 38


def tensors():
    """(BFL name, shape) of every tensor, in file order."""
    def linear(name, out_features, in_features):
        return [(f"{name}.weight", (out_features, in_features)), (f"{name}.bias", (out_features,))]
    out = linear("img_in", WIDTH, CHANNELS) + linear("txt_in", WIDTH, JOINT)
    for embedder, inputs in (("time_in", 256), ("vector_in", POOLED), ("guidance_in", 256)):
        out += linear(f"{embedder}.in_layer", WIDTH, inputs) + linear(f"{embedder}.out_layer", WIDTH, WIDTH)
    for i in range(DOUBLE):
        block = f"double_blocks.{i}"
        for stream in ("img", "txt"):
            out += linear(f"{block}.{stream}_mod.lin", 6 * WIDTH, WIDTH)
            out += linear(f"{block}.{stream}_attn.qkv", 3 * WIDTH, WIDTH)
            out += [(f"{block}.{stream}_attn.norm.query_norm.scale", (HEAD,)), (f"{block}.{stream}_attn.norm.key_norm.scale", (HEAD,))]
            out += linear(f"{block}.{stream}_attn.proj", WIDTH, WIDTH)
            out += linear(f"{block}.{stream}_mlp.0", MLP, WIDTH) + linear(f"{block}.{stream}_mlp.2", WIDTH, MLP)
    for i in range(SINGLE):
        block = f"single_blocks.{i}"
        out += linear(f"{block}.modulation.lin", 3 * WIDTH, WIDTH)
        out += linear(f"{block}.linear1", 3 * WIDTH + MLP, WIDTH) + linear(f"{block}.linear2", WIDTH, WIDTH + MLP)
        out += [(f"{block}.norm.query_norm.scale", (HEAD,)), (f"{block}.norm.key_norm.scale", (HEAD,))]
    out += linear("final_layer.linear", CHANNELS, WIDTH) + linear("final_layer.adaLN_modulation.1", 2 * WIDTH, WIDTH)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--dtype", choices=["fp8", "bf16", "q8_0", "q4_0", "q4_k"], default="fp8")
    parser.add_argument("--scaled", action="store_true")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--inputs")
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--text-tokens", type=int, default=64)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(11)
    if args.dtype.startswith("q"):
        write_gguf(args, generator)
    else:
        write_safetensors(args, generator)
    if args.inputs:
        write_inputs(args)


def write_gguf(args, generator) -> None:
    """city96's layout: block types where rows are whole blocks, F16 other matrices, F32 vectors."""
    from gguf import GGMLQuantizationType as T, GGUFWriter
    from gguf.quants import quantize
    qtype = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_k": T.Q4_K}[args.dtype]
    block, block_bytes = {T.Q8_0: (32, 34), T.Q4_0: (32, 18), T.Q4_K: (256, 144)}[qtype]
    rng = np.random.default_rng(12)

    def stored(name, shape):
        if len(shape) == 2 and shape[1] % block == 0:
            return qtype, shape[0] * shape[1] // block * block_bytes
        if len(shape) == 2:
            return T.F16, int(np.prod(shape)) * 2
        return T.F32, int(np.prod(shape)) * 4

    def data(name, shape, kind):
        if len(shape) != 2:
            base = 1.0 if name.endswith("norm.scale") else 0.0
            return (base + torch.randn(shape, generator=generator) * 0.02).numpy().astype(np.float32)
        if kind == T.F16:
            return (torch.randn(shape, generator=generator) * 0.02).numpy().astype(np.float16)
        if kind == T.Q4_K:
            # Random blocks: d, dmin (f16 at bytes 0 and 2) small enough for N(0, 0.02)-sized values.
            raw = rng.integers(0, 256, size=(shape[0] * shape[1] // 256, 144), dtype=np.uint8)
            scales = (rng.uniform(-1, 1, size=(raw.shape[0], 2)) * 4e-5).astype(np.float16)
            raw[:, 0:4] = scales.view(np.uint8).reshape(-1, 4)
            return raw.reshape(shape[0], -1)
        return quantize((torch.randn(shape, generator=generator) * 0.02).numpy().astype(np.float32), kind)

    writer = GGUFWriter(args.output, "flux")
    writer.add_string("general.producer", "Tools/bench/make_flux_dev_file.py")
    entries = [(args.prefix + name, shape) + stored(name, shape) for name, shape in tensors()]
    for name, shape, kind, nbytes in entries:
        dtype = np.uint8 if kind in (T.Q8_0, T.Q4_0, T.Q4_K) else (np.float16 if kind == T.F16 else np.float32)
        byte_shape = (shape[0], nbytes // shape[0]) if dtype == np.uint8 else shape
        writer.add_tensor_info(name, byte_shape, np.dtype(dtype), nbytes, raw_dtype=kind if dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total, done = sum(entry[3] for entry in entries), 0
    for index, (name, shape, kind, nbytes) in enumerate(entries):
        writer.write_tensor_data(np.ascontiguousarray(data(name, shape, kind)))
        done += nbytes
        if index % 40 == 0:
            print(f"\r{done / 2**30:6.2f} GiB of {total / 2**30:.2f}", end="", flush=True)
    writer.close()
    parameters = sum(int(np.prod(shape)) for _, shape, _, _ in entries)
    print(f"\n{args.output}: {parameters / 1e9:.2f} B parameters, {total / 1e9:.2f} GB of tensors ({args.dtype})")


def write_safetensors(args, generator) -> None:
    entries, offset = [], 0  # (name, dtype, shape, kind)
    for name, shape in tensors():
        matrix = len(shape) == 2
        dtype = ("F8_E4M3" if args.dtype == "fp8" else "BF16") if matrix else "BF16"
        size = int(np.prod(shape)) * (1 if dtype == "F8_E4M3" else 2)
        entries.append((name, dtype, shape, (offset, offset + size)))
        offset += size
        if matrix and args.scaled and args.dtype == "fp8":
            scale = name[: -len(".weight")] + ".scale_weight"
            entries.append((scale, "F32", (), (offset, offset + 4)))
            offset += 4
    header = {args.prefix + name: {"dtype": dtype, "shape": list(shape), "data_offsets": list(span)} for name, dtype, shape, span in entries}
    header["__metadata__"] = {"format": "pt", "producer": "Tools/bench/make_flux_dev_file.py"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    parameters = sum(int(np.prod(shape)) for name, dtype, shape, _ in entries if not name.endswith("scale_weight"))
    with open(args.output, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        pending_scale = None
        for index, (name, dtype, shape, span) in enumerate(entries):
            if name.endswith(".scale_weight"):
                file.write(struct.pack("<f", pending_scale))
                continue
            if len(shape) == 2:
                values = torch.randn(shape, generator=generator) * 0.02
                if dtype == "F8_E4M3":
                    scale = float(values.abs().max()) / 448 if args.scaled else 1.0
                    pending_scale = scale
                    data = (values / scale).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
                else:
                    data = values.to(torch.bfloat16).view(torch.int16).numpy()
            else:
                base = 1.0 if name.endswith("norm.scale") else 0.0
                data = (base + torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16).view(torch.int16).numpy()
            file.write(data.tobytes())
            if index % 40 == 0:
                print(f"\r{span[1] / 2**30:6.2f} GiB of {offset / 2**30:.2f}", end="", flush=True)
    print(f"\n{args.output}: {parameters / 1e9:.2f} B parameters, {offset / 1e9:.2f} GB of tensors")


def write_inputs(args) -> None:
    from safetensors.numpy import save_file
    rng = np.random.default_rng(5)
    side = int(round(args.image_tokens ** 0.5))
    ids = np.zeros((args.image_tokens, 3), dtype=np.float32)
    ids[:, 1] = np.arange(args.image_tokens) // side
    ids[:, 2] = np.arange(args.image_tokens) % side
    save_file({
        "hidden_states": rng.standard_normal((1, args.image_tokens, CHANNELS)).astype(np.float32),
        "encoder_hidden_states": rng.standard_normal((1, args.text_tokens, JOINT)).astype(np.float32),
        "pooled_projections": rng.standard_normal((1, POOLED)).astype(np.float32),
        "timestep": np.array([0.5], dtype=np.float32),
        "guidance": np.array([3.5], dtype=np.float32),
        "img_ids": ids,
        "txt_ids": np.zeros((args.text_tokens, 3), dtype=np.float32),
    }, args.inputs)


if __name__ == "__main__":
    main()
