"""The text-encoder benchmark's model and anchor.

`make FOLDER`: a mid-size T5 v1.1 encoder (12 layers, 1024 wide, 16 heads of 64, gated-GELU
2816; random weights, seed 0) as a diffusers-style pipeline folder for `lorafuse encode`
(text_encoder_2/ F32 sharded, the fixture tokenizers, a small CLIP with the real
vocabulary), plus the same T5 as single files `t5_bf16.safetensors` and
`t5_fp8_e4m3fn.safetensors` (matrices F8_E4M3, norms F16), as ComfyUI keeps them.
`run FOLDER PROMPT`: transformers/PyTorch on CPU encoding one prompt padded to 512 tokens,
one run after loading; prints one JSON line (seconds, load_seconds, peak_rss_bytes).
"""
import json
import pathlib
import resource
import shutil
import sys
import time

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "pipeline" / "flux-tiny"
CONFIG = dict(vocab_size=600, d_model=1024, d_kv=64, num_heads=16, d_ff=2816, num_layers=12,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128)


def make(folder: pathlib.Path):
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    t5 = T5EncoderModel(T5Config(**CONFIG)).eval()
    with torch.no_grad():
        for name, parameter in t5.named_parameters():
            if parameter.ndim == 2:
                parameter.normal_(0, parameter.shape[1] ** -0.5)
    t5.save_pretrained(str(folder / "text_encoder_2"), safe_serialization=True, max_shard_size="200MB")
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=2, eos_token_id=2))
    clip.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    for part in ("tokenizer", "tokenizer_2"):
        shutil.copytree(FIXTURES / part, folder / part, dirs_exist_ok=True)
    state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(folder / "t5_bf16.safetensors"))
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v.half() for k, v in state.items()},
              str(folder / "t5_fp8_e4m3fn.safetensors"))


def run(folder: pathlib.Path, prompt: str):
    import torch
    from transformers import T5EncoderModel, T5TokenizerFast

    torch.set_num_threads(torch.get_num_threads())
    start = time.perf_counter()
    tokenizer = T5TokenizerFast.from_pretrained(str(folder / "tokenizer_2"))
    model = T5EncoderModel.from_pretrained(str(folder / "text_encoder_2")).eval()
    load = time.perf_counter() - start
    ids = tokenizer(prompt, padding="max_length", max_length=512, truncation=True, return_tensors="pt").input_ids
    start = time.perf_counter()
    with torch.no_grad():
        model(ids)
    seconds = time.perf_counter() - start
    print(json.dumps(dict(command="encode-t5", backend="pytorch", device="cpu", torch=torch.__version__, threads=torch.get_num_threads(),
                          seconds=seconds, load_seconds=load,
                          peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))


if __name__ == "__main__":
    command, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "make":
        make(folder)
    else:
        run(folder, sys.argv[3])
