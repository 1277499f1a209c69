"""Tiny GPT-2 and BERT classifiers built offline (random weights, BPE trained on local text),
and the sentiment sentences and tagged tables the training and evaluation tests use.

The tokenizer trainer and the sample text are tests/tiny_models.py's. Fixtures are
session-scoped: each model is a few MB and builds in about a second. conftest.py imports the
fixtures so every test module can use them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tiny_models import help_topics, session_model, train_bpe

EOS = "<|endoftext|>"


def train_tokenizer(
    out_dir: Path,
    vocab_size: int = 1000,
    pad: str | None = None,
    extra_text: list[str] | None = None,
):
    """Byte-level BPE with `<|endoftext|>` as bos/eos/unk (GPT-2 style); optional pad token."""
    from transformers import PreTrainedTokenizerFast

    specials = [EOS] + ([pad] if pad else [])
    texts = help_topics(limit_chars=400_000) + list(extra_text or [])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(texts, vocab_size, specials),
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=pad,
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_gpt2(out_dir: Path, vocab_size: int = 1000, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    # The sentiment sentences of the training tests are in the tokenizer's corpus, so their
    # words are whole tokens (as a real tokenizer's would be for common words).
    tok = train_tokenizer(out_dir, vocab_size=vocab_size, extra_text=sentiment_sentences(3000))
    sizes = {"n_positions": 256, "n_embd": 64, "n_layer": 2, "n_head": 2}
    config = GPT2Config(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **sizes
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_bert_classifier(
    out_dir: Path, labels: list[str], multi_label: bool, seed: int = 0
) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = train_tokenizer(out_dir, vocab_size=600, pad="<pad>")
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    # Random heads give logits near zero; scale them up so probabilities spread across (0, 1).
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


tiny_gpt2_dir = session_model(
    "tiny_gpt2_dir",
    build_tiny_gpt2,
    "A GPT-2-style causal LM (n_embd 64, 2 layers) with a BPE tokenizer, saved as safetensors.",
)
tiny_toxicity_dir = session_model(
    "tiny_toxicity_dir",
    partial(build_tiny_bert_classifier, labels=["toxic", "insult", "threat"], multi_label=True),
    "A Detoxify-style multi-label BERT classifier (random weights): toxic, insult, threat.",
)
tiny_sentiment_dir = session_model(
    "tiny_sentiment_dir",
    partial(build_tiny_bert_classifier, labels=["negative", "positive"], multi_label=False),
    "A single-label (softmax) BERT classifier with labels negative/positive (random weights).",
)


POSITIVE_WORDS = ["wonderful", "great", "lovely", "excellent", "delightful", "happy", "amazing"]
NEGATIVE_WORDS = ["terrible", "awful", "horrible", "dreadful", "disgusting", "sad", "miserable"]
NOUNS = ["day", "meal", "trip", "film", "concert", "garden", "book", "visit", "party", "game"]


def sentiment_sentences(n: int, seed: int = 0, simple: bool = False) -> list[str]:
    """Short sentences, half clearly positive and half clearly negative (for VADER); `simple`
    ones carry a single sentiment word ("The day was lovely.")."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = POSITIVE_WORDS if i % 2 == 0 else NEGATIVE_WORDS
        a, b = rng.sample(words, 2)
        if simple:
            out.append(f"The {rng.choice(NOUNS)} was {a}.")
        else:
            out.append(f"The {rng.choice(NOUNS)} was {a} and the {rng.choice(NOUNS)} was {b}.")
    return out


def tagged_table(texts: list[str], run_id: str = "test-run"):
    """Rows in the output contract (stages.OUTPUT_SCHEMA): VADER control tokens, simple tags."""
    import pyarrow as pa

    from condlabel.classifiers import VaderClassifier, classify_table
    from condlabel.config import FormatConfig, VaderClassifierConfig
    from condlabel.convert.stages import format_table

    n = len(texts)
    chunks = pa.table(
        {
            "doc_id": [f"doc-{i}" for i in range(n)],
            "chunk_index": pa.array([0] * n, pa.int32()),
            "num_chunks": pa.array([1] * n, pa.int32()),
            "source": ["memory://sentences"] * n,
            "doc_hash": [f"h{i}" for i in range(n)],
            "num_words": pa.array([len(t.split()) for t in texts], pa.int32()),
            "text": texts,
            "synopsis": [t.split(" and ")[0] + "." for t in texts],
            "tags": [[t.split()[1], "review"] for t in texts],
            "control_tokens": pa.array([[] for _ in texts], pa.list_(pa.string())),
            "logprob": pa.array([None] * n, pa.float64()),
            "mean_logprob": pa.array([None] * n, pa.float64()),
            "num_generated_tokens": pa.array([0] * n, pa.int32()),
            "parse_ok": [True] * n,
            "truncated": [False] * n,
            "label_truncated": [False] * n,
            "input_tokens": pa.array([None] * n, pa.int32()),
            "raw_output": [""] * n,
            "labeler": ["test:fixture"] * n,
        }
    )
    from condlabel.schema import OUTPUT_SCHEMA

    labeled = classify_table([VaderClassifier(VaderClassifierConfig())], chunks)
    if "scores" not in OUTPUT_SCHEMA.names:
        labeled = labeled.drop_columns(["scores"])
    return format_table(FormatConfig(), labeled, run_id)
