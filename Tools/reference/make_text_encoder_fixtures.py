"""Text encoders and tokenizers for the text-encoder tests (FLUX's CLIP-L and T5).

Writes Tests/Fixtures/text/:
- ../pipeline/flux-tiny/tokenizer/   CLIP's real byte-level BPE vocabulary (from the open-clip-torch package,
                     `bpe_simple_vocab_16e6.txt.gz`), saved by transformers' CLIPTokenizer
                     as vocab.json + merges.txt.
- ../pipeline/flux-tiny/tokenizer_2/  a SentencePiece unigram model trained with the `sentencepiece` package on
                     a fixed corpus (spiece.model), converted by transformers to tokenizer.json.
- prompts.json       64 written prompts and 400 random ones, and their reference ids: `clip` from CLIPTokenizer as
                     FluxPipeline calls it (padding to 77, truncation; the slow tokenizer, without
                     ftfy, as a default install has it), `t5` from T5TokenizerFast (padding and
                     truncation to 96), `t5_slow` from T5Tokenizer (sentencepiece) for comparison.
- models/<name>/     tiny random CLIPTextModel and T5EncoderModel configs (every parameter random,
                     fixed seeds), saved as transformers folders (F32); `inputs.safetensors`
                     (`input_ids` int64) and `expected.safetensors` from the same weights in float64.
                     Single files as ComfyUI users have them: `clip-a/clip_l.safetensors`,
                     `t5-a/t5xxl_fp16.safetensors` and `t5-a/t5xxl_fp8_e4m3fn.safetensors`, each with
                     the float64 output of its own (rounded) weights.
- ../pipeline/flux-tiny/  a FLUX pipeline folder with only the text parts (text_encoder/ in BF16,
                     text_encoder_2/ sharded F32 with an index, the tokenizers above) and the
                     output of diffusers' FluxPipeline.encode_prompt in float64 for a few prompts.
- buckets.json       transformers' T5 relative-position buckets for distances −600…600.
Run: python3 Tools/reference/make_text_encoder_fixtures.py
(transformers 4.46.3, diffusers 0.31.0, sentencepiece 0.2.0, open-clip-torch 2.29.0, torch 2.5.1)
"""
import gzip
import importlib.util
import json
import pathlib
import random
import shutil

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer,
                          T5TokenizerFast)

OUT = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "text"
# The text half of the tiny FLUX pipeline; make_pipeline_fixtures.py adds the transformer and VAE.
PIPELINE = OUT.parent / "pipeline" / "flux-tiny"

PROMPTS = [
    "", " ", "a photo of a cat", "A Photo Of A CAT", "a red star with stripes",
    "a cat, a dog; and a bird: all together!", "it's the dog's bone, isn't it? we'll see. they've gone, you'd say",
    "3 apples and 42 oranges cost $12.50 (or 1,000 yen)", "2024-11-23 12:34:56", "version 3.14159 of π",
    "café crème brûlée à la carte", "naïve façade, coöperate, Zoë's résumé", "Ångström Øresund Æsir œuvre straße",
    "ÉCOLE ÉLÉMENTAIRE", "Ελληνικά γράμματα", "Русский текст с буквами", "東京タワーの夜景", "北京 上海 广州",
    "한국어 문장입니다", "العربية نص", "हिन्दी पाठ", "emoji 🐱🐶 party 🎉🎉", "family 👨‍👩‍👧 and flags 🇫🇷🇯🇵",
    "thumbs 👍🏽 up", "math: x² + y² = z², ½ + ¼ ≠ ¾", "ﬁne ﬂowers, Ⅻ, ①②③, ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
    "tabs\tand\nnew\r\nlines", "multiple     spaces   between", "  leading and trailing  ",
    "punctuation!!! ??? ... --- ***", "quotes \"double\" 'single' «guillemets» “curly” ‘curly’",
    "brackets (round) [square] {curly} <angle>", "email me@example.com and https://example.com/path?q=1&x=2",
    "#hashtag @mention $dollar %percent ^caret &and *star", "under_score snake_case camelCase PascalCase",
    "back\\slash and /slash/ and |pipe|", "zero\u200bwidth\u200cjoiner\u200dtest", "soft\u00adhyphen",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces", "control\x07bell\x1bescape\x00null",
    "the <|endoftext|> token in text", "<|startoftext|>already started", "</s> and <pad> and <unk> as text",
    "<extra_id_0> sentinel", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 3 + " " + "b" * 40, "1234567890 0987654321 3.0e-8",
    "mixed123numbers456and789letters", "ALL CAPS SHOUTING PROMPT", "İstanbul ıi ǅ ǈ ß ẞ",
    "combining e\u0301 vs é, n\u0303 vs ñ", "Ｈｅｌｌｏ，　ｗｏｒｌｄ！", "·•●○◆◇■□★☆",
    "a watercolor painting of a fox in a snowy forest, trending on artstation, 8k, highly detailed",
    "portrait of an old sailor with a pipe, oil on canvas, by rembrandt, dramatic lighting",
    "cyberpunk city at night, neon lights, rain, reflections, cinematic, ultra wide angle lens",
    " ".join(["very long prompt with many words"] * 30),
    " ".join(f"word{i}" for i in range(120)),
    "a cat sitting on a mat " * 20,
    "\u2028line\u2029separators\u0085next", "ǆemal ǈubljana", "ﷺ ﷽", "𝔣𝔯𝔞𝔨𝔱𝔲𝔯 𝕕𝕠𝕦𝕓𝕝𝕖",
]

def random_prompts(count, seed=11):
    """Prompts of random pieces from many scripts (combining marks, controls, emoji flags,
    math letters, private use, zero-width characters) mixed with words and special tokens."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E)] * 6 + [(0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x300, 0x36F), (0x2000, 0x206F),
                                   (0x3000, 0x30FF), (0x4E00, 0x4F00), (0xAC00, 0xAD00), (0x1F300, 0x1F64F), (0xFF00, 0xFFEF),
                                   (0x0, 0x1F), (0x600, 0x6FF), (0x900, 0x97F), (0x1D400, 0x1D4FF), (0xFB00, 0xFB4F),
                                   (0x2460, 0x24FF), (0xE000, 0xE010), (0x1F1E6, 0x1F1FF), (0x200B, 0x200F)]
    words = ["a", "the", "cat", "red", "star", "stripes", "it's", "we'll", "<|endoftext|>", "</s>", "<extra_id_3>", "  ",
             "\n", "café", "ǅ", "İ", "ΣΑΣ", "ﬁ", "ͅ"]
    prompts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.4:
                parts.append(rng.choice(words))
            else:
                low, high = rng.choice(ranges)
                parts.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 6))))
        prompts.append(rng.choice(["", " "]).join(parts))
    return prompts


CORPUS_WORDS = """a an the of with and in on at by for from over under near behind red green blue yellow orange purple
black white gray pink brown golden silver star circle square triangle heart moon cloud tree house car boat cat dog bird
fish horse flower mountain river forest city street night day morning evening sunset sunrise rain snow fog light dark
bright painting photo drawing sketch watercolor oil canvas portrait landscape style stripes dots checks waves texture
pattern small large tiny huge old young happy sad beautiful detailed cinematic dramatic soft hard smooth rough café
naïve façade résumé crème brûlée über straße one two three four five six seven eight nine ten 2024 100 3.5 high quality
""".split()


def randomise(model, generator, norm_names=("layer_norm", "final_layer_norm", "layernorm")):
    """Every parameter random: matrices ~ U(±1/√fan_in), embeddings N(0, 1), norm weights near 1,
    biases small (transformers zero-initialises some, which would hide bugs)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "embed" in name or "relative_attention_bias" in name or name.endswith("shared.weight"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim == 2:
                bound = 1.0 / parameter.shape[1] ** 0.5
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound)
            elif any(part in name for part in norm_names) and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def save_tensors(path, tensors, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def clip_tokenizer(folder: pathlib.Path) -> CLIPTokenizer:
    """transformers' CLIP tokenizer files from the BPE merges open-clip ships (the same
    vocabulary as openai/clip-vit-large-patch14)."""
    spec = importlib.util.find_spec("open_clip")
    source = pathlib.Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(source).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in merges]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def t5_tokenizers(folder: pathlib.Path):
    """A small unigram SentencePiece model (T5's kind: pad 0, </s> 1, <unk> 2, nmt_nfkc
    normalisation) trained on a fixed corpus, and transformers' slow and fast T5 tokenizers on it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    corpus = folder.parent / "t5_corpus.txt.tmp-"
    syllables = ["ka", "lo", "mi", "ran", "tes", "vu", "zor", "pli", "que", "dha", "nov", "ste", "gri", "bel", "wy"]
    words = CORPUS_WORDS + ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(600)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) for _ in range(4000)]
    lines = [line.capitalize() + rng.choice([".", ",", "!", "?", "", ";"]) for line in lines]
    corpus.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=500,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=0.9995, seed_sentencepiece_size=20000,
                                   num_threads=1, minloglevel=2)
    corpus.unlink()
    (folder / "spiece.vocab").unlink()
    slow = T5Tokenizer(str(folder / "spiece.model"), extra_ids=100, model_max_length=512, legacy=True)
    slow.save_pretrained(str(folder))
    fast = T5TokenizerFast.from_pretrained(str(folder), from_slow=True, legacy=True)
    fast.save_pretrained(str(folder))
    return slow, fast


def tokenizer_fixtures():
    root = PIPELINE
    for part in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(root / part, ignore_errors=True)
    clip = clip_tokenizer(root / "tokenizer")
    t5_slow, t5_fast = t5_tokenizers(root / "tokenizer_2")
    cases = []
    for prompt in PROMPTS + random_prompts(400):
        clip_ids = clip(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
        t5_ids = t5_fast(prompt, padding="max_length", max_length=96, truncation=True)["input_ids"]
        t5_slow_ids = t5_slow(prompt, padding="max_length", max_length=96, truncation=True)["input_ids"]
        case = dict(prompt=prompt, clip=clip_ids, t5=t5_ids)
        if t5_slow_ids != t5_ids:
            case["t5_slow"] = t5_slow_ids
        cases.append(case)
    header = dict(generated_by="Tools/reference/make_text_encoder_fixtures.py",
                  clip="CLIPTokenizer (slow, no ftfy), padding='max_length', max_length=77, truncation=True",
                  t5="T5TokenizerFast from tokenizer.json, padding='max_length', max_length=96, truncation=True",
                  t5_slow="T5Tokenizer (sentencepiece, legacy=True), same arguments; only where it differs from t5")
    lines = [json.dumps(case, ensure_ascii=False, separators=(",", ":")) for case in cases]
    (OUT / "prompts.json").write_text(json.dumps(header, ensure_ascii=False)[:-1] + ',"cases":[\n' + ",\n".join(lines) + "\n]}\n")
    differ = sum("t5_slow" in case for case in cases)
    print(f"tokenizers: {len(cases)} prompts; T5 fast and slow differ on {differ}")
    return clip, t5_fast


CLIP_CONFIGS = {
    # name: (config, batch, sequence length); clip-a keeps transformers' legacy eos_token_id 2
    # (pooled at the arg-max id), clip-b names its end-of-text id.
    "clip-a": (dict(vocab_size=300, hidden_size=48, intermediate_size=100, num_hidden_layers=2, num_attention_heads=3,
                    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=2), 2, 77),
    "clip-b": (dict(vocab_size=211, hidden_size=40, intermediate_size=72, num_hidden_layers=3, num_attention_heads=5,
                    max_position_embeddings=20, hidden_act="gelu", layer_norm_eps=1e-6, eos_token_id=7,
                    bos_token_id=5, pad_token_id=7), 1, 13),
}
T5_CONFIGS = {
    "t5-a": (dict(vocab_size=320, d_model=48, d_kv=12, num_heads=4, d_ff=72, num_layers=2, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6), 1, 37),
    "t5-b": (dict(vocab_size=150, d_model=40, d_kv=16, num_heads=3, d_ff=56, num_layers=3, relative_attention_num_buckets=16,
                  relative_attention_max_distance=20, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-5), 2, 29),
    # The original T5 (v1.0): one ReLU feed-forward matrix; and a gated-SiLU variant.
    "t5-c": (dict(vocab_size=90, d_model=24, d_kv=8, num_heads=2, d_ff=40, num_layers=2, relative_attention_num_buckets=8,
                  relative_attention_max_distance=12, feed_forward_proj="relu", layer_norm_epsilon=1e-6), 1, 17),
    "t5-d": (dict(vocab_size=90, d_model=24, d_kv=6, num_heads=4, d_ff=36, num_layers=1, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128, feed_forward_proj="gated-silu", layer_norm_epsilon=1e-6), 1, 150),
}


def float64_run(module, *args, **kwargs):
    """Runs a module in float64, in eval mode (T5's dropout is 0.1 in training mode).
    transformers builds CLIP's causal mask with the default dtype, which cannot hold
    float64's minimum: make float64 the default meanwhile."""
    for part in (module, getattr(module, "__self__", None)):
        for attribute in ("text_encoder", "text_encoder_2"):
            if hasattr(part, attribute):
                getattr(part, attribute).eval()
        if isinstance(part, torch.nn.Module):
            part.eval()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            return module(*args, **kwargs)
    finally:
        torch.set_default_dtype(previous)


def round_state(model, dtype):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(dtype).to(parameter.dtype))


def model_fixtures():
    root = OUT / "models"
    shutil.rmtree(root, ignore_errors=True)
    for seed, (name, (config, batch, length)) in enumerate({**CLIP_CONFIGS, **T5_CONFIGS}.items()):
        generator = torch.Generator().manual_seed(100 + seed)
        is_clip = name.startswith("clip")
        model = CLIPTextModel(CLIPTextConfig(**config)) if is_clip else T5EncoderModel(T5Config(**config))
        randomise(model, generator)
        folder = root / name
        model.save_pretrained(str(folder / "model"), safe_serialization=True)
        ids = torch.randint(0, config["vocab_size"], (batch, length), generator=generator)
        if name == "clip-b":
            ids[0, 9] = config["eos_token_id"]  # the end-of-text id, then padding with it
            ids[0, 10:] = config["eos_token_id"]
        save_tensors(folder / "inputs.safetensors", {"input_ids": ids})

        def run(m):
            out = float64_run(m.double(), ids)
            result = {"last_hidden_state": out.last_hidden_state.float()}
            if is_clip:
                result["pooler_output"] = out.pooler_output.float()
            return result

        save_tensors(folder / "expected.safetensors", run(model))
        readme = [f"# {name}", "", f"`{type(model).__name__}` {json.dumps(config)}; input ids [{batch}, {length}], seed {100 + seed}.",
                  "`model/`: transformers folder (F32). `expected.safetensors`: float64 outputs of the same weights."]
        if name == "clip-a":
            save_tensors(folder / "clip_l.safetensors", {k: v.float() for k, v in model.state_dict().items()})
            readme.append("`clip_l.safetensors`: the same weights as one file with CLIPTextModel's names (ComfyUI's clip_l).")
        if name == "t5-a":
            state = {k: v for k, v in model.float().state_dict().items() if k != "encoder.embed_tokens.weight"}
            for label, dtype in (("fp16", torch.float16), ("fp8_e4m3fn", torch.float8_e4m3fn)):
                # ComfyUI's fp8 T5: matrices in F8_E4M3 (a plain cast, no scales), norms in F16.
                narrow = {k: (v.to(dtype) if v.ndim == 2 or label == "fp16" else v.half()) for k, v in state.items()}
                save_tensors(folder / f"t5xxl_{label}.safetensors", narrow)
                rounded = T5EncoderModel(T5Config(**config))
                rounded.load_state_dict({k: v.float() for k, v in narrow.items()}, strict=False)
                rounded.shared.weight.data.copy_(narrow["shared.weight"].float())
                save_tensors(folder / f"expected_{label}.safetensors", run(rounded))
            readme.append("`t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`: the same weights as single files with "
                          "T5EncoderModel's names (ComfyUI's layout; fp8: matrices F8_E4M3 by a plain cast, norms F16); "
                          "`expected_<dtype>.safetensors`: float64 outputs of those rounded weights.")
        (folder / "README.md").write_text("\n".join(readme) + "\n")
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters")


def pipeline_fixture(clip_tokenizer_, t5_tokenizer):
    from diffusers import FluxPipeline

    root = PIPELINE
    generator = torch.Generator().manual_seed(300)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                                        eos_token_id=2))
    t5 = T5EncoderModel(T5Config(vocab_size=t5_tokenizer.vocab_size + 0, d_model=32, d_kv=8, num_heads=4, d_ff=48,
                                 num_layers=2, feed_forward_proj="gated-gelu"))
    randomise(clip, generator)
    randomise(t5, generator)
    round_state(clip, torch.bfloat16)
    clip.to(torch.bfloat16).save_pretrained(str(root / "text_encoder"), safe_serialization=True)
    t5.save_pretrained(str(root / "text_encoder_2"), safe_serialization=True, max_shard_size="40KB")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxPipeline", "_diffusers_version": "0.31.0",
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"]}, indent=1))
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=clip.double(), tokenizer=clip_tokenizer_,
                        text_encoder_2=t5.double(), tokenizer_2=t5_tokenizer, transformer=None)
    prompts = {"cat": "a photo of a cat", "long": " ".join(f"word{i}" for i in range(60)), "unicode": "café 🐱 東京"}
    for label, prompt in prompts.items():
        embeds, pooled, text_ids = float64_run(pipe.encode_prompt, prompt, prompt_2=None, max_sequence_length=48)
        clip_ids = clip_tokenizer_(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        t5_ids = t5_tokenizer(prompt, padding="max_length", max_length=48, truncation=True, return_tensors="pt").input_ids
        save_tensors(root / f"expected_{label}.safetensors", {
            "encoder_hidden_states": embeds.float(), "pooled_projections": pooled.float(), "txt_ids": text_ids.float(),
            "clip_input_ids": clip_ids, "t5_input_ids": t5_ids}, metadata={"prompt": prompt, "max_sequence_length": "48"})
    (root / "README.md").write_text(
        "# pipeline\n\nThe text half of a FLUX pipeline folder: `text_encoder/` (CLIPTextModel, BF16, the real CLIP "
        "vocabulary), `text_encoder_2/` (T5EncoderModel, F32, sharded with an index), `tokenizer/`, `tokenizer_2/`. "
        "`expected_<label>.safetensors`: diffusers `FluxPipeline.encode_prompt(prompt, max_sequence_length=48)` in "
        "float64 (the prompt is in the file's metadata) and the token ids.\n")


def bucket_fixture():
    """transformers' T5 relative-position buckets (bidirectional) for distances −600…600, for
    T5-XXL's (32 buckets, max distance 128) and the fixture configs' settings."""
    from transformers.models.t5.modeling_t5 import T5Attention
    relative = torch.arange(-600, 601)
    tables = {f"{buckets},{distance}": T5Attention._relative_position_bucket(
        relative, bidirectional=True, num_buckets=buckets, max_distance=distance).tolist()
        for buckets, distance in ((32, 128), (16, 20), (32, 20))}
    (OUT / "buckets.json").write_text(json.dumps(dict(first_relative=-600, tables=tables)))


if __name__ == "__main__":
    import sys
    bucket_fixture()
    if "--buckets-only" in sys.argv:
        sys.exit()
    clip_tok, t5_tok = tokenizer_fixtures()
    model_fixtures()
    pipeline_fixture(clip_tok, t5_tok)
