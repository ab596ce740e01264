"""Trains AutoLoRA's LoRA weight encoder contrastively against caption embeddings, on CPU.

The loss is the research code's (train_retriever.py in lzws/AutoLoRA): cosine similarities
between the normalised caption embeddings (FLUX's CLIP-L: the final state at the end-of-text
token, frozen) and the normalised LoRA embeddings, symmetric InfoNCE over a batch
(−log softmax over rows and over columns of the diagonal), ×10; `--temperature` divides
the similarities first (1, the default, is the research code's loss; CLIP's 0.07 learns faster). The weights are written
under the research code's names, which `lorafuse pool add --encoder` reads.

    python3 Tools/train/train_retriever.py --loras DIR --captions captions.json \
        --pipeline FLUX_PIPELINE_FOLDER --out encoder.safetensors [--steps 300] [--batch 8]

--loras: a folder of LoRA .safetensors files (any format DiffSynth reads); --captions: JSON
{file name: caption or [captions]}; --pipeline: the FLUX pipeline whose CLIP embeds captions
(text_encoder/, tokenizer/) and whose transformer/config.json gives the model's sizes.
Prints the loss and, at the end, the top-1 caption→LoRA retrieval accuracy on the pool and
on held-out captions when `--holdout` names a JSON of other captions for the same files.
"""
import argparse
import json
import pathlib
import random
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from retriever_model import LoRAEncoder, read_as_diffsynth  # noqa: E402


def caption_embeddings(pipeline, texts):
    tokenizer = CLIPTokenizer.from_pretrained(str(pipeline / "tokenizer"))
    model = CLIPTextModel.from_pretrained(str(pipeline / "text_encoder"), torch_dtype=torch.float32).eval()
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).pooler_output.float()


def accuracy(encoder, loras, names, captions, pipeline):
    texts = [captions[name] for name in names]
    text = torch.nn.functional.normalize(caption_embeddings(pipeline, texts), dim=-1)
    with torch.no_grad():
        lora = torch.nn.functional.normalize(torch.cat([encoder(loras[name]) for name in names]), dim=-1)
    return (text @ lora.T).argmax(dim=1).eq(torch.arange(len(names))).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loras", required=True)
    parser.add_argument("--captions", required=True)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--holdout")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="similarities are divided by it; 1 is the research code's loss, CLIP uses 0.07")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    pipeline = pathlib.Path(args.pipeline)
    config = json.loads((pipeline / "transformer" / "config.json").read_text())
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    sizes = (hidden, int(hidden * config.get("mlp_ratio", 4.0)), config["num_layers"], config["num_single_layers"])
    width = json.loads((pipeline / "text_encoder" / "config.json").read_text())["hidden_size"]

    captions = {k: (v if isinstance(v, list) else [v]) for k, v in json.loads(pathlib.Path(args.captions).read_text()).items()}
    files = sorted(p for p in pathlib.Path(args.loras).glob("*.safetensors") if p.name in captions)
    if len(files) < 2:
        sys.exit(f"need at least 2 LoRAs with captions in {args.loras}, found {len(files)}")
    loras = {p.name: {k: v.float() for k, v in read_as_diffsynth(p).items()} for p in files}
    names = [p.name for p in files]
    all_texts = sorted({text for name in names for text in captions[name]})
    text_table = dict(zip(all_texts, caption_embeddings(pipeline, all_texts)))

    encoder = LoRAEncoder(sizes, width=width, layers=args.layers, intermediate=args.intermediate)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(args.steps):
        batch = random.sample(names, min(args.batch, len(names)))
        text = torch.nn.functional.normalize(torch.stack([text_table[random.choice(captions[n])] for n in batch]), dim=-1)
        lora = torch.nn.functional.normalize(torch.cat([encoder(loras[n]) for n in batch]), dim=-1)
        similarity = text @ lora.T / args.temperature
        loss = 10 * (-torch.log(torch.softmax(similarity, dim=0).diag()) - torch.log(torch.softmax(similarity, dim=1).diag())).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.1f} s)")
    encoder.eval()
    first = {name: captions[name][0] for name in names}
    print(f"top-1 caption→LoRA on the pool: {accuracy(encoder, loras, names, first, pipeline):.3f} ({len(names)} LoRAs)")
    if args.holdout:
        held = json.loads(pathlib.Path(args.holdout).read_text())
        held_names = [n for n in names if n in held]
        print(f"top-1 on held-out captions: {accuracy(encoder, loras, held_names, held, pipeline):.3f} ({len(held_names)} LoRAs)")
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
