"""The text-to-image benchmark's pipeline and anchor.

`make FOLDER`: a FLUX pipeline folder around the mid-size transformer of flux_pytorch.py
(hidden 1024 = 8 heads × 128, 2 double + 4 single blocks; random weights, seed 7) with small
text encoders of the right widths (CLIP 768 wide, 1 layer, the real vocabulary; T5 4096
wide, 1 layer) and a FLUX-layout VAE at reduced widths (16 latent channels, blocks
32/64/128/128, 1 layer per block), plus `noise.safetensors` for 512×512 (torch, seed 0).
`run FOLDER STEPS`: diffusers' FluxPipeline on CPU in float32 at 512×512 with that noise;
prints one JSON line (seconds per step, encode and decode seconds, peak RSS).
"""
import json
import pathlib
import resource
import shutil
import sys
import time

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "pipeline" / "flux-tiny"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
PROMPT = "a watercolor painting of a fox in a snowy forest"
SIZE = 512


def make(folder: pathlib.Path):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel
    from flux_pytorch import CONFIG

    generator = torch.Generator().manual_seed(7)
    folder.mkdir(parents=True, exist_ok=True)

    def randomise(model, scale=0.02):
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.ndim >= 2:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * min(scale, parameter[0].numel() ** -0.5))
                elif "norm" in name and name.endswith("weight"):
                    parameter.fill_(1)
                else:
                    parameter.zero_()
        return model

    randomise(FluxTransformer2DModel(**CONFIG)).save_pretrained(str(folder / "transformer"), safe_serialization=True)
    randomise(CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=1024, num_hidden_layers=1,
                                           num_attention_heads=12, eos_token_id=2))).save_pretrained(str(folder / "text_encoder"))
    randomise(T5EncoderModel(T5Config(vocab_size=600, d_model=4096, d_kv=64, num_heads=8, d_ff=1024, num_layers=1,
                                      feed_forward_proj="gated-gelu"))).save_pretrained(str(folder / "text_encoder_2"))
    randomise(AutoencoderKL(latent_channels=16, block_out_channels=(32, 64, 128, 128), layers_per_block=1, norm_num_groups=32,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
              scale=0.05).save_pretrained(str(folder / "vae"))
    FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
                                    shift=3.0, use_dynamic_shifting=True).save_pretrained(str(folder / "scheduler"))
    for part in ("tokenizer", "tokenizer_2"):
        shutil.copytree(FIXTURES / part, folder / part, dirs_exist_ok=True)
    shutil.copy(FIXTURES / "model_index.json", folder / "model_index.json")
    noise = torch.randn((1, 16, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(0))
    save_file({"noise": noise}, str(folder / "noise.safetensors"))


def run(folder: pathlib.Path, steps: int):
    import torch
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    start = time.perf_counter()
    pipe = FluxPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    load = time.perf_counter() - start
    noise = load_file(str(folder / "noise.safetensors"))["noise"]
    latents = FluxPipeline._pack_latents(noise, 1, 16, SIZE // 8, SIZE // 8)
    marks = []
    start = time.perf_counter()
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=512)
    encode = time.perf_counter() - start

    def mark(pipeline, step, timestep, kwargs):
        marks.append(time.perf_counter())
        return {}

    start = time.perf_counter()
    with torch.no_grad():
        pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, height=SIZE, width=SIZE, num_inference_steps=steps,
             guidance_scale=3.5, latents=latents, output_type="np", callback_on_step_end=mark)
    total = time.perf_counter() - start
    step_seconds = [b - a for a, b in zip([start] + marks[:-1], marks)]
    print(json.dumps(dict(command="generate", backend="pytorch", device="cpu", torch=torch.__version__,
                          threads=torch.get_num_threads(), steps=steps, seconds_per_step=sum(step_seconds) / len(step_seconds),
                          step_seconds=step_seconds, encode_seconds=encode, decode_seconds=total - (marks[-1] - start),
                          load_seconds=load, peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))


if __name__ == "__main__":
    command, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "make":
        make(folder)
    else:
        run(folder, int(sys.argv[3]))
