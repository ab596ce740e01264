"""AutoLoRA's LoRA weight encoder (the retriever) on the tiny FLUX of Tests/Fixtures/flux/dev-tiny.

The encoder (Tools/train/retriever_model.py) is written from the research code (`retriever.py` in lzws/AutoLoRA:
LoRALayerBlock, LoRAEmbedder, LoRAEncoder with DiffSynth's CLIPEncoderLayer) and keeps its
state-dict names; the one extension is this project's: a layer the LoRA lacks is a zero LoRA
(its token is the projection bias). LoRAs are read as DiffSynth reads them: its own
FluxLoRALoader.convert_state_dict (q/k/v fused with A stacked and B block-diagonal, single
blocks' q/k/v/MLP fused, kohya alpha as √(α/r) into A and B).
Writes Tests/Fixtures/retrieval/:
- encoder.safetensors   random weights (seed 900), width 16 (the tiny pipeline's CLIP width), 2 layers;
- encoder-flux-tiny.safetensors  the same architecture for Tests/Fixtures/pipeline/flux-tiny's transformer;
- expected.safetensors  the float64 embedding of each LoRA of Tests/Fixtures/lora, named by file.
Run after make_lora_fixtures.py: python3 Tools/reference/make_retrieval_fixtures.py
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "train"))
from retriever_model import LoRAEncoder, read_as_diffsynth  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures"
OUT = FIXTURES / "retrieval"
LORAS = ["all.peft", "partial.peft", "attention.peft", "all.kohya", "attention.diffsynth"]


def randomise(encoder, generator):
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if name.endswith(".x"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim >= 2:
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) / parameter.shape[-1] ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return encoder


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(900)
    encoder = randomise(LoRAEncoder(), generator)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(OUT / "encoder.safetensors"))
    # An encoder for the tiny pipeline's transformer (hidden 16, 1 double + 2 single blocks), for
    # retrieval inside `lorafuse generate --auto-loras`.
    pipeline = randomise(LoRAEncoder((16, 64, 1, 2)), torch.Generator().manual_seed(901))
    save_file({k: v.contiguous() for k, v in pipeline.state_dict().items()}, str(OUT / "encoder-flux-tiny.safetensors"))
    encoder = encoder.double().eval()
    expected = {}
    with torch.no_grad():
        for name in LORAS:
            expected[name] = encoder(read_as_diffsynth(FIXTURES / "lora" / f"{name}.safetensors"))[0].float().contiguous()
        expected["empty"] = encoder({})[0].float().contiguous()
    save_file(expected, str(OUT / "expected.safetensors"))
    (OUT / "README.md").write_text(__doc__)
    print({k: round(float(v.norm()), 4) for k, v in expected.items()})


if __name__ == "__main__":
    main()
