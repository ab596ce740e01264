#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, from the test fixtures (nothing downloaded).

usage: make_corpus.py OUTPUT_FOLDER   (one subfolder per target; existing seeds are kept)
Large fixtures are cut down so each seed stays small (libFuzzer's inputs grow from them):
CLIP's vocabulary to its first 600 entries and 300 merges, tensors to headers with tiny data.
"""
import json
import pathlib
import struct
import sys

root = pathlib.Path(__file__).resolve().parents[2]
fixtures = root / "Tests" / "Fixtures"
out = pathlib.Path(sys.argv[1])


def seed(target, name, data):
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def header_only(path, limit=64):
    """A safetensors file with at most `limit` tensors, each cut to a few bytes."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    metadata = header.pop("__metadata__", None)
    kept, offset, body = {}, 0, b""
    for name, info in list(header.items())[:limit]:
        begin, end = info["data_offsets"]
        data = raw[8 + length + begin:8 + length + min(end, begin + 16)]
        count = 1
        size = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}.get(info["dtype"], 1)
        count = len(data) // size
        kept[name] = {"dtype": info["dtype"], "shape": [count], "data_offsets": [offset, offset + count * size]}
        body += data[:count * size]
        offset += count * size
    if metadata:
        kept["__metadata__"] = metadata
    text = json.dumps(kept).encode()
    return struct.pack("<Q", len(text)) + text + body


for path in sorted((fixtures / "gguf").glob("*.gguf")):
    seed("FuzzGGUFHeader", path.name, path.read_bytes())
seed("FuzzSafeTensorsHeader", "torch_written.safetensors", (fixtures / "safetensors/torch_written.safetensors").read_bytes())
for path in sorted((fixtures / "lora").glob("*.safetensors")) + sorted((fixtures / "pipeline").glob("*.safetensors"))[:4]:
    seed("FuzzSafeTensorsHeader", path.name, header_only(path))
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    keys = [key for key in json.loads(raw[8:8 + length]) if key != "__metadata__"]
    seed("FuzzLoRAKeys", path.stem + ".txt", "\n".join(keys[:64]))

for path in sorted(fixtures.rglob("config.json")):
    if "transformer" in path.parts:
        seed("FuzzFluxConfig", "-".join(path.relative_to(fixtures).parts), path.read_bytes())

for path in sorted(fixtures.rglob("tokenizer.json")):
    seed("FuzzTokenizerJSON", "-".join(path.relative_to(fixtures).parts), path.read_bytes())

clip = fixtures / "pipeline/flux-tiny/tokenizer"
vocab = json.loads((clip / "vocab.json").read_text(encoding="utf-8"))
small = dict(list(vocab.items())[:600])
small.update({key: value for key, value in vocab.items() if key.startswith("<|")})
merges = (clip / "merges.txt").read_text(encoding="utf-8").split("\n")[:301]
seed("FuzzCLIPVocabMerges", "flux-tiny", json.dumps(small).encode() + b"\0" + "\n".join(merges).encode())

for path in sorted(fixtures.rglob("spiece.model")):
    seed("FuzzSentencePiece", "-".join(path.relative_to(fixtures).parts), path.read_bytes())
