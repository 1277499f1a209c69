"""Tiny generative models built from configs with random weights, for tests and benchmarks.

No model hub: the builders are plain functions that take an output directory, so benchmarks can
import them (`sys.path.insert(0, "tests")`); the session fixtures at the bottom build each model
once per test session. Everything is saved as safetensors and loaded back through the real
loading code.

- `build_tokenizer`: byte-level BPE trained on Python's own help topics (`pydoc_data.topics`).
- `build_tiny_t5`: a T5 (d_model 64, 2+2 layers) with T5's special ids (pad 0, eos 1, unk 2).
- `build_tiny_llama`: a Llama (hidden 128, 2 layers), left padding.
- `build_lora_adapter`: a peft LoRA adapter with `init_lora_weights=False`, so it really changes
  the outputs.

Random models never pick EOS under greedy decoding. With `eos_likely=True` the EOS row of the
output layer is copied from a token that greedy decoding emits at varied steps, so some
sequences stop early and others late (what batch-invariance tests need).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

T5_SPECIALS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in every T5 checkpoint
CAUSAL_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def sample_texts(
    n: int = 64, min_words: int = 20, max_words: int = 400, seed: int = 0
) -> list[str]:
    """`n` texts of varied length cut from Python's help topics (deterministic for a seed)."""
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)).split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_words, max_words)
        start = rng.randrange(0, len(words) - length)
        out.append(" ".join(words[start : start + length]))
    return out


def build_tokenizer(out_dir: str | Path, kind: str = "t5", vocab_size: int = 2000) -> Path:
    """Train a byte-level BPE on local text; save it as a `PreTrainedTokenizerFast`."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = T5_SPECIALS if kind == "t5" else CAUSAL_SPECIALS
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([topics[k] for k in sorted(topics)], trainer)
    if kind == "t5":
        # T5 appends </s> to every input; generation starts from <pad> (the decoder start).
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="<pad>",
            eos_token="</s>",
            unk_token="<unk>",
            model_max_length=512,
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            model_max_length=512,
            padding_side="left",
        )
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
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    out = Path(out_dir)
    build_tokenizer(out, "t5", tokenizer_vocab)
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size or len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=64,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        initializer_factor=5.0,  # the default init makes a random T5 repeat <pad> forever
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    if eos_likely:
        _make_eos_likely(model, tokenizer, sample_texts(16, max_words=150, seed=seed + 1))
    return _save(model, tokenizer, out)


def build_tiny_llama(
    out_dir: str | Path, eos_likely: bool = True, seed: int = 0, tokenizer_vocab: int = 2000
) -> Path:
    """A Llama with hidden size 128, 2 layers and 512 positions, and its tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    build_tokenizer(out, "causal", tokenizer_vocab)
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    if eos_likely:
        _make_eos_likely(model, tokenizer, sample_texts(16, max_words=150, seed=seed + 1))
    return _save(model, tokenizer, out)


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


# --------------------------------------------------------------------------- session fixtures


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """Tiny T5 (seq2seq) model directory with its tokenizer; EOS is likely."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_t5_adapter(tiny_t5, tmp_path_factory) -> Path:
    """LoRA adapter directory for `tiny_t5`."""
    return build_lora_adapter(tiny_t5, tmp_path_factory.mktemp("tiny-t5-lora"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Tiny Llama (causal) model directory with its tokenizer; EOS is likely."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_adapter(tiny_llama, tmp_path_factory) -> Path:
    """LoRA adapter directory for `tiny_llama`."""
    return build_lora_adapter(tiny_llama, tmp_path_factory.mktemp("tiny-llama-lora"))
