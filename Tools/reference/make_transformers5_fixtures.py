"""Fixtures written by today's tools: transformers 5 and the diffusers that goes with it.

transformers 5 changed three things LoRAFuse reads:
- `CLIPTextModel.save_pretrained` writes its keys without the `text_model.` prefix
  (`embeddings.token_embedding.weight`, `encoder.layers.0…`, `final_layer_norm.…`);
- `CLIPTokenizer.save_pretrained` writes only `tokenizer.json` (+ `tokenizer_config.json`),
  no `vocab.json` / `merges.txt`;
- `CLIPTokenizer` runs the tokenizers backend: NFC, every whitespace run to one space, lower
  case, CLIP's word pattern, byte-level BPE. transformers 4's slow tokenizer (what
  `make_text_encoder_fixtures.py` records in `text/prompts.json`) cleaned the text through BERT's
  BasicTokenizer first (CJK ideographs split apart, format characters such as U+200D dropped).

Writes:
- Tests/Fixtures/text/transformers5/clip/, t5/: a tiny random CLIPTextModel and T5EncoderModel
  (fixed seeds) saved by transformers 5 (`model/`), `inputs.safetensors` (`input_ids`) and
  `expected.safetensors` (float64 outputs of the same weights).
- Tests/Fixtures/text/prompts-transformers5.json: CLIP ids from transformers 5's CLIPTokenizer on
  the real CLIP vocabulary (`pipeline/flux-tiny/tokenizer`, as FluxPipeline calls it: padding to
  77, truncation) for the prompts of `prompts.json` and 60 more (emoji with ZWJ, CJK, accents,
  special tokens as text, long, empty); each case also carries transformers 4's slow ids when
  they differ (read from prompts.json for the shared prompts, not recomputed).
- Tests/Fixtures/pipeline/flux-tiny-transformers5/: a whole FluxPipeline folder written by
  `FluxPipeline.save_pretrained` (diffusers 0.42, transformers 5): a new CLIP on a reduced CLIP
  vocabulary (the first 2,000 merges of the real one, so the folder stays small; tokenizer.json
  only; width 64, one head), a new T5 (sharded) with flux-tiny's unigram tokenizer, a new
  transformer of flux-tiny's shape but 64-wide pooled input, and flux-tiny's VAE and scheduler re-saved; `expected_<label>.safetensors`: `FluxPipeline.encode_prompt` in
  float64, and `generate-dev.safetensors`: a 3-step generation in float64 with imported noise.
Run (after make_text_encoder_fixtures.py and make_pipeline_fixtures.py, in an environment from
requirements-transformers5.txt): python3 Tools/reference/make_transformers5_fixtures.py
"""
import importlib.util
import json
import pathlib
import shutil

import torch
from safetensors.torch import save_file
import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

assert transformers.__version__.startswith("5."), f"needs transformers 5, found {transformers.__version__}"

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "Tests" / "Fixtures"
TEXT = FIXTURES / "text"
SOURCE_PIPELINE = FIXTURES / "pipeline" / "flux-tiny"
PIPELINE = FIXTURES / "pipeline" / "flux-tiny-transformers5"

# The prompt lists and helpers of the transformers 4 script (importing it imports nothing that
# transformers 5 lacks).
spec = importlib.util.spec_from_file_location("text_fixtures", HERE / "make_text_encoder_fixtures.py")
text_fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(text_fixtures)
spec = importlib.util.spec_from_file_location("pipeline_fixtures", HERE / "make_pipeline_fixtures.py")
pipeline_fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline_fixtures)

EXTRA_PROMPTS = [
    "family 👨‍👩‍👧‍👦 at the beach", "👩🏽‍💻 coding", "🏳️‍🌈 flag", "❤️‍🔥 heart on fire", "🧑‍🤝‍🧑",
    "a‍b zero width joiner between letters", "東京タワーの夜景", "富士山と桜", "日本語のテキストです。", "中文提示词：一只猫",
    "漢字かなカナ混じり文", "한국어 고양이", "写真 of a 猫 in 東京", "ＡＢＣ全角", "ｶﾀｶﾅ半角",
    "crème brûlée", "Crème Brûlée", "e\u0301 combining acute", "Å vs A\u030a", "ΟΔΟΣ ΣΑΣ Σ",
    "İstanbul", "ǅungla", "straße STRASSE", "ﬁne ﬂow", "Ⅻ ⅻ",
    "<|endoftext|>", "<|ENDOFTEXT|>", "a <|startoftext|> b", "x<|endoftext|>y", "<|endoftext|><|endoftext|>",
    "", " ", "\t\n", "   a   ", "\u3000ideographic\u3000space",
    "tab\there", "line\u2028separator", "nbsp\u00a0here", "soft\u00adhyphen", "bidi \u202eoverride\u202c",
    "control\x01chars\x7f", "null\x00byte", "replacement \ufffd char", "private \ue000 use", "emoji 🐱🐶 cats and dogs",
    "😀😃😄😁😆😅🤣😂", "1234567890", "3.14159 2,000 1e-9", "it's we'll they'd I'M YOU'RE", "don't stop",
    " ".join(["a long prompt"] * 40), "word " * 100, "x" * 300, "東京" * 50, "👨‍👩‍👧" * 20,
    "CamelCaseWordsTogether", "snake_case_words", "kebab-case-words", "UPPER lower MiXeD", "a\u0345b ypogegrammeni",
]


def tokenizer_fixture():
    clip = CLIPTokenizer.from_pretrained(str(SOURCE_PIPELINE / "tokenizer"))
    # The same tokenizer from the tokenizer.json transformers 5 writes gives the same ids.
    saved = PIPELINE.parent / "_clip_tokenizer_t5"
    shutil.rmtree(saved, ignore_errors=True)
    clip.save_pretrained(str(saved))
    resaved = CLIPTokenizer.from_pretrained(str(saved))
    v4 = {case["prompt"]: case["clip"] for case in json.loads((TEXT / "prompts.json").read_text())["cases"]}
    cases = []
    prompts = list(dict.fromkeys(text_fixtures.PROMPTS + text_fixtures.random_prompts(400) + EXTRA_PROMPTS))
    for prompt in prompts:
        ids = clip(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert ids == resaved(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"], prompt
        case = dict(prompt=prompt, clip=ids)
        if prompt in v4 and v4[prompt] != ids:
            case["clip_transformers4"] = v4[prompt]
        cases.append(case)
    shutil.rmtree(saved)
    header = dict(generated_by="Tools/reference/make_transformers5_fixtures.py",
                  clip=f"transformers {transformers.__version__} CLIPTokenizer (tokenizers backend) on "
                       "pipeline/flux-tiny/tokenizer, padding='max_length', max_length=77, truncation=True",
                  clip_transformers4="prompts.json's ids (transformers 4.46.3's slow CLIPTokenizer), where they differ")
    lines = [json.dumps(case, ensure_ascii=False, separators=(",", ":")) for case in cases]
    (TEXT / "prompts-transformers5.json").write_text(
        json.dumps(header, ensure_ascii=False)[:-1] + ',"cases":[\n' + ",\n".join(lines) + "\n]}\n")
    differ = sum("clip_transformers4" in case for case in cases)
    print(f"tokenizer: {len(cases)} prompts; transformers 4's slow ids differ on {differ}")


def model_fixtures():
    root = TEXT / "transformers5"
    shutil.rmtree(root, ignore_errors=True)
    configs = {
        "clip": (CLIPTextModel, CLIPTextConfig(vocab_size=257, hidden_size=40, intermediate_size=56, num_hidden_layers=2,
                                               num_attention_heads=4, max_position_embeddings=19, hidden_act="quick_gelu",
                                               eos_token_id=2, bos_token_id=0, pad_token_id=1), 2, 19),
        "t5": (T5EncoderModel, T5Config(vocab_size=131, d_model=36, d_kv=10, num_heads=3, d_ff=44, num_layers=2,
                                        relative_attention_num_buckets=16, relative_attention_max_distance=24,
                                        feed_forward_proj="gated-gelu"), 1, 23),
    }
    for seed, (name, (cls, config, batch, length)) in enumerate(configs.items()):
        generator = torch.Generator().manual_seed(700 + seed)
        model = cls(config)
        text_fixtures.randomise(model, generator)
        folder = root / name
        model.save_pretrained(str(folder / "model"))
        ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
        save_file({"input_ids": ids.contiguous()}, str(folder / "inputs.safetensors"))
        out = text_fixtures.float64_run(model.double(), ids)
        expected = {"last_hidden_state": out.last_hidden_state.float().contiguous()}
        if name == "clip":
            expected["pooler_output"] = out.pooler_output.float().contiguous()
        save_file(expected, str(folder / "expected.safetensors"))
        from safetensors import safe_open
        keys = sorted(safe_open(str(folder / "model" / "model.safetensors"), "pt").keys())
        (folder / "README.md").write_text(
            f"# {name}\n\n`{cls.__name__}` saved by transformers {transformers.__version__} (`model/`; its keys start "
            f"`{keys[0]}`), seed {700 + seed}, input ids [{batch}, {length}]; `expected.safetensors`: float64 outputs.\n")
        print(f"{name}: first key {keys[0]}")


def reduced_clip_tokenizer(folder: pathlib.Path, merges_kept=2000):
    """CLIP's byte-level BPE with only its first `merges_kept` merges (a valid CLIP tokenizer:
    every byte symbol stays, so any text encodes)."""
    vocab = json.loads((SOURCE_PIPELINE / "tokenizer" / "vocab.json").read_text())
    merges = (SOURCE_PIPELINE / "tokenizer" / "merges.txt").read_text().split("\n")[1:1 + merges_kept]
    byte_chars = list(text_fixtures.bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert all(t in vocab for t in tokens)
    staging = folder.parent / "_clip_files"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (staging / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}))
    tokenizer = CLIPTokenizer.from_pretrained(str(staging))
    assert len(tokenizer) == len(tokens), (len(tokenizer), len(tokens))
    shutil.rmtree(staging)
    return tokenizer, len(tokens)


def pipeline_fixture():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    shutil.rmtree(PIPELINE, ignore_errors=True)
    PIPELINE.mkdir(parents=True)
    generator = torch.Generator().manual_seed(800)
    tokenizer, vocab_size = reduced_clip_tokenizer(PIPELINE / "tokenizer")
    # One head of 64, as CLIP-L's are: a single file cannot show CLIP's head count, so readers of
    # ComfyUI files (make_comfyui_fixtures.py packs this pipeline as one) take heads as 64 wide.
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=40, num_hidden_layers=2,
                                        num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                                        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    t5_tokenizer = T5TokenizerFast.from_pretrained(str(SOURCE_PIPELINE / "tokenizer_2"))
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                                 feed_forward_proj="gated-gelu"))
    text_fixtures.randomise(clip, generator)
    text_fixtures.randomise(t5, generator)
    transformer = FluxTransformer2DModel(**{**pipeline_fixtures.TRANSFORMERS["transformer"], "pooled_projection_dim": 64})
    pipeline_fixtures.randomise(transformer, generator)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(str(SOURCE_PIPELINE / "scheduler")),
        vae=AutoencoderKL.from_pretrained(str(SOURCE_PIPELINE / "vae")),
        text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer,
        transformer=transformer)
    pipe.save_pretrained(str(PIPELINE), max_shard_size="100KB")

    pipe = FluxPipeline.from_pretrained(str(PIPELINE))
    for part in (pipe.text_encoder, pipe.text_encoder_2, pipe.transformer, pipe.vae):
        part.double().eval()
    prompts = {"cat": "a photo of a cat", "zwj": "family 👨‍👩‍👧 in 東京タワーの夜景, café", "long": " ".join(f"word{i}" for i in range(60))}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # CLIP's causal mask is built in the default dtype
    try:
        for label, prompt in prompts.items():
            with torch.no_grad():
                embeds, pooled, text_ids = pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=48)
            clip_ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            t5_ids = pipe.tokenizer_2(prompt, padding="max_length", max_length=48, truncation=True, return_tensors="pt").input_ids
            save_file({"encoder_hidden_states": embeds.float().contiguous(), "pooled_projections": pooled.float().contiguous(),
                       "clip_input_ids": clip_ids.contiguous(), "t5_input_ids": t5_ids.contiguous()},
                      str(PIPELINE / f"expected_{label}.safetensors"), metadata={"prompt": prompt, "max_sequence_length": "48"})
        height, width, steps, guidance, seed, prompt = 32, 48, 3, 3.5, 42, prompts["zwj"]
        channels = pipe.transformer.config.in_channels // 4
        # diffusers 0.42 sizes latents as 2 · (size // (2 · vae_scale_factor)) (0.31: size // vae_scale_factor · 2).
        latent_height, latent_width = (2 * (size // (2 * pipe.vae_scale_factor)) for size in (height, width))
        noise = torch.randn((1, channels, latent_height, latent_width), generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float32)
        packed = FluxPipeline._pack_latents(noise.double(), 1, channels, latent_height, latent_width)
        recorded = {}

        def record(pipeline, step, timestep, kwargs):
            latents = FluxPipeline._unpack_latents(kwargs["latents"], height, width, pipeline.vae_scale_factor)
            recorded[f"latents_{step}"] = latents.float().contiguous()
            return {}

        with torch.no_grad():
            image = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                         latents=packed, max_sequence_length=48, output_type="np",
                         callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents"]).images[0]
        pixels = torch.from_numpy((image * 255).round().astype("uint8")).contiguous()
        save_file({"noise": noise, **recorded, "image": pixels}, str(PIPELINE / "generate-dev.safetensors"),
                  metadata=dict(prompt=prompt, height=str(height), width=str(width), steps=str(steps), guidance=str(guidance),
                                max_sequence_length="48"))
    finally:
        torch.set_default_dtype(previous)
    (PIPELINE / "README.md").write_text(
        "# flux-tiny-transformers5\n\nA whole FLUX pipeline folder written by `FluxPipeline.save_pretrained` (diffusers "
        f"{__import__('diffusers').__version__}, transformers {transformers.__version__}): a new random CLIPTextModel (width 64, one head) "
        "(keys without `text_model.`) on CLIP's vocabulary cut to its first 2,000 merges (`tokenizer/` is tokenizer.json "
        "only), a new random T5EncoderModel (sharded) with flux-tiny's unigram tokenizer, a new random transformer of "
        "flux-tiny's shape with a 64-wide pooled input, flux-tiny's VAE and scheduler re-saved. `expected_<label>.safetensors`: `encode_prompt(prompt, max_sequence_length=48)` in float64 "
        "(prompt in the metadata); `generate-dev.safetensors`: the pipeline in float64 with imported `noise`, the latents "
        "after each step (unpacked) and the uint8 image. Made by Tools/reference/make_transformers5_fixtures.py.\n")
    print("pipeline:", sorted(p.name for p in PIPELINE.iterdir()))


if __name__ == "__main__":
    tokenizer_fixture()
    model_fixtures()
    pipeline_fixture()
