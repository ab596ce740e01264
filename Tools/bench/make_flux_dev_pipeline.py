"""The parts of a FLUX pipeline folder that a full-size FLUX.1-dev transformer needs beside it,
at FLUX.1-dev's widths but tiny otherwise, for a whole `lorafuse generate` on the full-size
transformer from make_flux_dev_file.py without downloading anything:

  text_encoder/    CLIPTextModel, hidden 768 (FLUX's pooled width), 1 layer, random weights
  text_encoder_2/  T5EncoderModel, d_model 4096 (FLUX's joint width), 1 layer, random weights
  vae/             AutoencoderKL with FLUX's 16 latent channels and 8× scale (4 tiny blocks)
  tokenizer/, tokenizer_2/, scheduler/  copied from Tests/Fixtures/pipeline/flux-tiny
  model_index.json

No transformer/: give it with `--transformer flux1-dev-fp8.safetensors`. Never committed.
  usage: python3 Tools/bench/make_flux_dev_pipeline.py OUT_FOLDER
Needs torch, transformers 4.46 and diffusers 0.31 (Tools/reference/requirements.txt).
"""
import pathlib
import shutil
import sys

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "pipeline" / "flux-tiny"


def randomise(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2:
                bound = 1.0 / parameter.shape[1] ** 0.5
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound)
            elif name.endswith("weight"):
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for part in ("tokenizer", "tokenizer_2", "scheduler"):
        shutil.copytree(FIXTURE / part, out / part, dirs_exist_ok=True)
    shutil.copy(FIXTURE / "model_index.json", out / "model_index.json")
    clip_vocab = CLIPTextConfig.from_pretrained(FIXTURE / "text_encoder").vocab_size
    t5_vocab = T5Config.from_pretrained(FIXTURE / "text_encoder_2").vocab_size
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=clip_vocab, hidden_size=768, intermediate_size=256, num_hidden_layers=1,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                        projection_dim=768))
    randomise(clip, 1)
    clip.half().save_pretrained(out / "text_encoder", safe_serialization=True)
    t5 = T5EncoderModel(T5Config(vocab_size=t5_vocab, d_model=4096, d_kv=64, num_heads=2, d_ff=256, num_layers=1,
                                 feed_forward_proj="gated-gelu", relative_attention_num_buckets=32))
    randomise(t5, 2)
    t5.half().save_pretrained(out / "text_encoder_2", safe_serialization=True)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, scaling_factor=0.3611, shift_factor=0.1159,
                        use_quant_conv=False, use_post_quant_conv=False)
    randomise(vae, 3)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    print(f"{out}: CLIP-768, T5-4096, 16-channel VAE (give --transformer)")


if __name__ == "__main__":
    main()
