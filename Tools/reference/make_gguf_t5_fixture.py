"""A T5 encoder GGUF as llama.cpp names it (city96's `t5-v1_1-xxl-encoder-Q8_0.gguf` layout) and
its reference, for the T5 GGUF loader.

A tiny random T5EncoderModel (gated-GELU, T5 v1.1 like FLUX's T5-XXL; d_model 64 so its rows are
whole Q8_0 blocks), saved as tests/Fixtures/text/models/t5-gguf/:
  t5-q8_0.gguf           token_embd and every Linear in Q8_0 (quantized by gguf itself), the
                         relative-attention table F16, norms F32; names `token_embd.weight`,
                         `enc.blk.N.attn_{q,k,v,o,rel_b,norm}.weight`, `enc.blk.N.ffn_{gate,up,down,norm}.weight`,
                         `enc.output_norm.weight`; architecture `t5encoder`.
  inputs.safetensors     input ids [1, 23].
  expected.safetensors   transformers' last_hidden_state in float64 on the stored values widened
                         (gguf's `quants.dequantize`).
Run: python3 Tools/reference/make_gguf_t5_fixture.py   (torch, transformers, gguf 0.19.0)
"""
import importlib.util
import pathlib

import numpy as np
import torch
from gguf import GGMLQuantizationType as T, GGUFWriter
from gguf.quants import dequantize, quantize
from transformers import T5Config, T5EncoderModel

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("text_fixtures", HERE / "make_text_encoder_fixtures.py")
text_fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(text_fixtures)
OUT = HERE.parents[1] / "Tests" / "Fixtures" / "text" / "models" / "t5-gguf"
CONFIG = dict(vocab_size=96, d_model=64, d_kv=16, num_heads=4, d_ff=96, num_layers=2, relative_attention_num_buckets=32,
              relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)


def gguf_name(name: str) -> str:
    """transformers' T5EncoderModel name → llama.cpp's."""
    if name == "shared.weight":
        return "token_embd.weight"
    if name == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    parts = name.split(".")  # encoder.block.N.layer.L.<module>...
    block, layer, rest = parts[2], parts[4], ".".join(parts[5:])
    table = {
        "SelfAttention.q.weight": "attn_q", "SelfAttention.k.weight": "attn_k", "SelfAttention.v.weight": "attn_v",
        "SelfAttention.o.weight": "attn_o", "SelfAttention.relative_attention_bias.weight": "attn_rel_b",
        "DenseReluDense.wi_0.weight": "ffn_gate", "DenseReluDense.wi_1.weight": "ffn_up", "DenseReluDense.wo.weight": "ffn_down",
    }
    short = table.get(rest) or {"0": "attn_norm", "1": "ffn_norm"}[layer]
    return f"enc.blk.{block}.{short}.weight"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(140)
    model = T5EncoderModel(T5Config(**CONFIG))
    text_fixtures.randomise(model, generator)
    writer = GGUFWriter(str(OUT / "t5-q8_0.gguf"), "t5encoder")
    values = {}
    for name, tensor in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        array = tensor.numpy().astype(np.float32)
        if array.ndim == 2 and "relative_attention_bias" not in name:
            raw = quantize(array, T.Q8_0)
            writer.add_tensor(gguf_name(name), raw, raw_dtype=T.Q8_0)
            values[name] = dequantize(raw, T.Q8_0)
        elif array.ndim == 2:
            half = array.astype(np.float16)
            writer.add_tensor(gguf_name(name), half)
            values[name] = half.astype(np.float32)
        else:
            writer.add_tensor(gguf_name(name), array)
            values[name] = array
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            key = "shared.weight" if name == "encoder.embed_tokens.weight" else name
            parameter.copy_(torch.from_numpy(values[key]))
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 23), generator=generator)
    text_fixtures.save_tensors(OUT / "inputs.safetensors", {"input_ids": ids})
    out = text_fixtures.float64_run(model.double(), ids)
    text_fixtures.save_tensors(OUT / "expected.safetensors", {"last_hidden_state": out.last_hidden_state.float()})
    (OUT / "README.md").write_text(
        "# t5-gguf\n\nA tiny T5EncoderModel as a llama.cpp-named GGUF (Q8_0 matrices and embedding, F16 relative-attention "
        "table, F32 norms) and transformers' float64 output on its stored values. Produced by "
        "Tools/reference/make_gguf_t5_fixture.py.\n")
    print(f"t5-gguf: {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
