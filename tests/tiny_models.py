"""Tiny generative models built from configs with random weights, for tests and benchmarks.

No model hub: the builders are plain functions that take an output directory, so benchmarks can
import them (`sys.path.insert(0, "tests")`); `session_model` fixtures at the bottom build each
model once per test session. Everything is saved as safetensors and loaded back through the real
loading code.

- `help_topics`, `sample_texts`: text that ships with Python (`pydoc_data.topics`), the one
  source of sample text for tests and benchmarks.
- `train_bpe`, `build_tokenizer`: byte-level BPE trained on that text (the one trainer;
  tests/lm_fixtures.py uses it too).
- `build_tiny_t5`: a T5 (d_model 64, 2+2 layers) with T5's special ids (pad 0, eos 1, unk 2).
- `build_student_t5`: the same T5 with T5's default initialisation, to train (distillation).
- `build_sized_t5`: a T5 of a chosen size (~14M parameters by default; bench/ct2_vs_hf.py).
- `build_tiny_llama`: a Llama (hidden 128, 2 layers), left padding.
- `build_lora_adapter`: a peft LoRA adapter with `init_lora_weights=False`, so it really changes
  the outputs; `build_lora_adapter_bin`: the same adapter saved as `adapter_model.bin`.

Random models never pick EOS under greedy decoding. With `eos_likely=True` the EOS row of the
output layer is set so that EOS wins at about a third of the steps greedy decoding visits, so
some sequences stop early and others late (what batch-invariance tests need).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

try:
    import pytest
except ImportError:  # bench/gpu_check.py on a GPU machine without pytest: the builders only
    pytest = None  # type: ignore[assignment]

T5_SPECIALS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in every T5 checkpoint
CAUSAL_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def help_topics(limit_chars: int | None = None) -> list[str]:
    """Text that ships with Python: its help topics (English prose with some code), in a fixed
    order; with `limit_chars`, the first topics up to and including the one that reaches it."""
    from pydoc_data.topics import topics

    out, total = [], 0
    for key in sorted(topics):
        out.append(topics[key])
        total += len(topics[key])
        if limit_chars is not None and total >= limit_chars:
            break
    return out


def sample_texts(
    n: int = 64, min_words: int = 20, max_words: int = 400, seed: int = 0
) -> list[str]:
    """`n` texts of varied length cut from Python's help topics (deterministic for a seed)."""
    words = " ".join(help_topics()).split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_words, max_words)
        start = rng.randrange(0, len(words) - length)
        out.append(" ".join(words[start : start + length]))
    return out


def train_bpe(texts: list[str], vocab_size: int, specials: list[str], unk_token: str | None = None):
    """A byte-level BPE (`tokenizers.Tokenizer`) trained on `texts`, specials first in its vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(out_dir: str | Path, kind: str = "t5", vocab_size: int = 2000) -> Path:
    """Train a byte-level BPE on local text; save it as a `PreTrainedTokenizerFast`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    t5 = kind == "t5"
    specials = T5_SPECIALS if t5 else CAUSAL_SPECIALS
    tok = train_bpe(help_topics(), vocab_size, specials, unk_token="<unk>")
    # T5 appends </s> to every input (generation starts from <pad>, the decoder start); a
    # causal LM's input starts with <s>, and its prompts pad on the left.
    marker = "</s>" if t5 else "<s>"
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>" if t5 else "<s> $A", special_tokens=[(marker, tok.token_to_id(marker))]
    )
    roles = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    if not t5:
        roles |= {"bos_token": "<s>", "padding_side": "left"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **roles)
    out = Path(out_dir)
    fast.save_pretrained(out)
    return out


def _make_eos_likely(model, tokenizer, texts: list[str], rate: float = 0.35) -> None:
    """Point the EOS row of the output layer along the mean final hidden state, scaled so that
    EOS beats every other token at about `rate` of the steps greedy decoding visits: sequences
    then stop after ~1/rate tokens on average, each at its own step."""
    import torch

    captured: list[torch.Tensor] = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    hidden, best_other = [], []
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt")
            out = model.generate(**enc, max_new_tokens=24, do_sample=False)
            captured.clear()
            if model.config.is_encoder_decoder:
                logits = model(**enc, decoder_input_ids=out).logits[0]
            else:
                logits = model(input_ids=out).logits[0, enc["input_ids"].shape[1] - 1 :]
                captured[-1] = captured[-1][:, enc["input_ids"].shape[1] - 1 :]
            logits[:, eos] = -torch.inf
            hidden.append(captured[-1][0])
            best_other.append(logits.max(-1).values)
    hook.remove()
    h, m = torch.cat(hidden), torch.cat(best_other)
    direction = h.mean(0) / h.mean(0).norm()
    proj = h @ direction
    ratio = torch.where(proj > 0, m / proj, torch.full_like(m, torch.inf))
    scale = torch.quantile(ratio[torch.isfinite(ratio)], rate)
    with torch.no_grad():
        head.weight[eos] = scale * direction


def _save(model, tokenizer, out_dir: Path) -> Path:
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# The tiny architectures (a few MB each, seconds to build), as tables.
# fmt: off
T5_CONFIG = {
    "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2,
    "num_heads": 4, "relative_attention_num_buckets": 16, "relative_attention_max_distance": 64,
    "dropout_rate": 0.0, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
    "initializer_factor": 5.0,  # the default init makes a random T5 repeat <pad> forever
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}
LLAMA_CONFIG = {
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
    "tie_word_embeddings": False, "initializer_range": 0.1,
}
# fmt: on


def _build_generative(out_dir, kind: str, tokenizer_vocab: int, seed: int, eos_likely: bool, make):
    """Tokenizer, then `make(tokenizer)` under `seed`, optionally EOS made likely; saved."""
    import torch
    from transformers import AutoTokenizer

    out = Path(out_dir)
    build_tokenizer(out, kind, tokenizer_vocab)
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    model = make(tokenizer).eval()
    if eos_likely:
        _make_eos_likely(model, tokenizer, sample_texts(16, max_words=150, seed=seed + 1))
    return _save(model, tokenizer, out)


def build_tiny_t5(
    out_dir: str | Path,
    vocab_size: int | None = None,
    eos_likely: bool = True,
    seed: int = 0,
    tokenizer_vocab: int = 2000,
) -> Path:
    """A ~0.4M-parameter T5 and its tokenizer. `vocab_size` may exceed the tokenizer's (as
    flan-ul2's 32128 output rows do), which widens every generation step's distribution."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    def make(tokenizer):
        config = T5Config(vocab_size=vocab_size or len(tokenizer), **T5_CONFIG)
        model = T5ForConditionalGeneration(config)
        with torch.no_grad():
            torch.nn.init.normal_(model.lm_head.weight, std=0.5)
        return model

    return _build_generative(out_dir, "t5", tokenizer_vocab, seed, eos_likely, make)


def build_student_t5(out_dir: str | Path, seed: int = 0, tokenizer_vocab: int = 2000) -> Path:
    """A tiny T5 to train (distillation tests): the `build_tiny_t5` shape with T5's default
    initialisation, which learns in a few hundred steps (the inference fixtures' large init,
    made so random weights do not repeat <pad>, starts training at a loss of ~60)."""
    from transformers import T5Config, T5ForConditionalGeneration

    def make(tokenizer):
        config = T5Config(vocab_size=len(tokenizer), **(T5_CONFIG | {"initializer_factor": 1.0}))
        return T5ForConditionalGeneration(config)

    return _build_generative(out_dir, "t5", tokenizer_vocab, seed, False, make)


def build_sized_t5(
    out_dir: str | Path,
    *,
    d_model: int = 256,
    layers: int = 4,
    heads: int = 8,
    d_ff: int = 1024,
    initializer_factor: float = 1.0,
    eos_likely: bool = True,
    seed: int = 0,
    tokenizer_vocab: int = 8000,
) -> Path:
    """A T5 of a chosen size (the defaults: ~14M parameters, the size the ct2 benchmark uses)
    with `build_tiny_t5`'s recipe; a lower `initializer_factor` than the tiny one's 5.0 keeps
    its float32 scores better conditioned (float32 and float64 agreed to <1e-4 on 40 chunks)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    sizes = {"d_model": d_model, "d_kv": d_model // heads, "d_ff": d_ff, "num_heads": heads}
    sizes |= {"num_layers": layers, "num_decoder_layers": layers}
    sizes |= {"initializer_factor": initializer_factor}

    def make(tokenizer):
        config = T5Config(vocab_size=len(tokenizer), **{**T5_CONFIG, **sizes})
        model = T5ForConditionalGeneration(config)
        with torch.no_grad():
            torch.nn.init.normal_(model.lm_head.weight, std=0.5)
        return model

    return _build_generative(out_dir, "t5", tokenizer_vocab, seed, eos_likely, make)


def build_tiny_llama(
    out_dir: str | Path, eos_likely: bool = True, seed: int = 0, tokenizer_vocab: int = 2000
) -> Path:
    """A Llama with hidden size 128, 2 layers and 512 positions, and its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(tokenizer):
        special = ("bos_token_id", "eos_token_id", "pad_token_id")
        ids = {name: getattr(tokenizer, name) for name in special}
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **ids, **LLAMA_CONFIG))

    return _build_generative(out_dir, "causal", tokenizer_vocab, seed, eos_likely, make)


def build_lora_adapter(base_dir: str | Path, out_dir: str | Path, seed: int = 1) -> Path:
    """A LoRA adapter on the attention projections of the model in `base_dir`, with random
    non-zero weights so it changes the outputs; saved as adapter_model.safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(base_dir)
    if config.is_encoder_decoder:
        model = AutoModelForSeq2SeqLM.from_pretrained(base_dir, use_safetensors=True)
        targets, task = ["q", "v"], "SEQ_2_SEQ_LM"
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
        targets, task = ["q_proj", "v_proj"], "CAUSAL_LM"
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=targets,
        task_type=task,
        lora_dropout=0.0,
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, lora)
    out = Path(out_dir)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def build_lora_adapter_bin(base_dir: str | Path, out_dir: str | Path, seed: int = 1) -> Path:
    """The adapter `build_lora_adapter` makes for this seed, saved the way peft did before
    safetensors (`adapter_model.bin`, a torch pickle), as the reference adapter was published."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    out = Path(out_dir)
    staged = build_lora_adapter(base_dir, out.with_name(out.name + "-safetensors"), seed)
    seq2seq = AutoConfig.from_pretrained(base_dir).is_encoder_decoder
    model_cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    base = model_cls.from_pretrained(base_dir, use_safetensors=True)
    PeftModel.from_pretrained(base, staged).save_pretrained(out, safe_serialization=False)
    return out


# --------------------------------------------------------------------------- session fixtures


def session_model(name: str, build: Callable[..., Path], doc: str, base: str | None = None):
    """A session fixture `name` that builds a model directory once per test session with
    `build(out_dir)`, or `build(<the fixture base>, out_dir)` for what is built on a base."""

    def fixture(request, tmp_path_factory) -> Path:
        out = tmp_path_factory.mktemp(name.replace("_", "-"))
        return build(request.getfixturevalue(base), out) if base else build(out)

    fixture.__doc__ = doc
    if pytest is None:
        return fixture
    return pytest.fixture(scope="session", name=name)(fixture)


tiny_t5 = session_model(
    "tiny_t5", build_tiny_t5, "Tiny T5 (seq2seq) model directory with its tokenizer; EOS is likely."
)
tiny_t5_adapter = session_model(
    "tiny_t5_adapter", build_lora_adapter, "LoRA adapter directory for `tiny_t5`.", "tiny_t5"
)
student_t5 = session_model(
    "student_t5", build_student_t5, "Tiny T5 with default initialisation, to distill into."
)
tiny_llama = session_model(
    "tiny_llama",
    build_tiny_llama,
    "Tiny Llama (causal) model directory with its tokenizer; EOS is likely.",
)
tiny_llama_adapter = session_model(
    "tiny_llama_adapter",
    build_lora_adapter,
    "LoRA adapter directory for `tiny_llama`.",
    "tiny_llama",
)
