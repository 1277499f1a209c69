"""The student's training data, Ray- and torch-free: the teacher's rows -> examples.

teacher rows (latest versions, `parse_ok` only)
  -> train / holdout by a hash of the document id (all chunks of a document on one side)
  -> prompt ids: the chunk rendered and tokenized by the labeler's own encoding
     (`condlabel.labelers.encoding.prompt_encoding`, with the arguments the `hf` labeler
     passes), so the exported student sees at labeling time exactly what it trained on
  -> target ids: the teacher's `Synopsis: ... Tags: [...]` (`render_label`), then EOS
  -> padded micro-batches (seq2seq: encoder input + labels; causal: prompt + target, the
     prompt masked out of the loss)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import StudentConfig
from condlabel.convert.sampling import id_fraction
from condlabel.labelers.encoding import PromptEncoding, prompt_encoding
from condlabel.labelers.hf import _declared_positions
from condlabel.labelers.prompts import render_label
from condlabel.train.data import IGNORE_INDEX, row_keys

HOLDOUT_SALT = "condlabel-holdout-v1"
"""Independent of the sample's hash: a sampled corpus still splits at the configured rate."""
EXAMPLE_COLUMNS = ["doc_id", "text", "synopsis", "tags"]
"""What an example needs of a teacher row."""
READ_COLUMNS = [*EXAMPLE_COLUMNS, "parse_ok", "doc_hash", "chunk_index", "run_id"]
"""What is read of the teacher's output: the example, its parse flag and its version keys."""


def is_holdout(doc_id: str, fraction: float) -> bool:
    return id_fraction(doc_id, HOLDOUT_SALT) < fraction


def holdout_rank(doc_id: str) -> float:
    """Order of held-out documents: the gate takes the lowest first, the same every run."""
    return id_fraction(doc_id, HOLDOUT_SALT)


def select_examples(
    batch: pa.Table, kept: pa.Array | None, holdout_fraction: float, holdout: bool
) -> pa.Table:
    """The rows of a batch of teacher output that are examples of one side of the split:
    latest versions (`kept`, from `condlabel.train.data.latest_row_keys`; None keeps all),
    labels that parsed, and training (`holdout=False`) or held-out documents."""
    if kept is not None:
        batch = batch.filter(pc.is_in(row_keys(batch), value_set=kept))
    batch = batch.filter(pc.fill_null(batch.column("parse_ok"), False))
    side = [is_holdout(d, holdout_fraction) == holdout for d in batch.column("doc_id").to_pylist()]
    return batch.filter(pa.array(side, pa.bool_())).select(EXAMPLE_COLUMNS)


def target_text(synopsis: str, tags: Sequence[str], prompt_suffix: str = "") -> str:
    """What the student learns to write: the teacher's label in the canonical form. A causal
    prompt that ends with the `Synopsis:` marker is continued after it (the labeler puts the
    marker back before parsing), so the target starts after it too."""
    label = render_label(synopsis, list(tags))
    marker = prompt_suffix.strip()
    if marker and label.startswith(marker):
        return label[len(marker) :]
    return label


def student_encoding(
    tokenizer: Any, model_config: Any, generation_eos: Any, student: StudentConfig, seq2seq: bool
) -> PromptEncoding:
    """The encoding the `hf` labeler builds for the exported student (same function, same
    arguments; `tests/test_distill_units.py` checks the ids match the labeler's)."""
    return prompt_encoding(
        tokenizer,
        student.prompt_template,
        configured_eos=(generation_eos, model_config.eos_token_id),
        positions=_declared_positions(model_config),
        causal=not seq2seq,
        max_new_tokens=student.max_new_tokens,
        max_input_tokens=student.max_input_tokens,
        model=student.model or "student",
        section="student",
    )


@dataclass(frozen=True)
class Example:
    prompt_ids: list[int]
    target_ids: list[int]


def encode_examples(
    encoding: PromptEncoding, rows: Sequence[dict[str, Any]], max_new_tokens: int
) -> list[Example]:
    """Prompt and target ids of each teacher row. A target longer than `max_new_tokens` is cut
    there without EOS: the labeler would stop generating at the same place."""
    prompts = encoding.encode([row["text"] or "" for row in rows])
    eos = encoding.eos_ids[0]
    examples = []
    for (prompt, _), row in zip(prompts, rows, strict=True):
        text = target_text(row["synopsis"] or "", row["tags"] or [], encoding.suffix)
        target = encoding.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        target = target[:max_new_tokens] if len(target) >= max_new_tokens else [*target, eos]
        examples.append(Example(list(prompt), target))
    return examples


def collate(examples: Sequence[Example], pad_id: int, seq2seq: bool) -> dict[str, list[list[int]]]:
    """Padded model inputs (right padding; the attention mask hides it) and labels (padding and,
    for a causal student, the prompt are `IGNORE_INDEX`, out of the loss)."""
    if seq2seq:
        inputs = [e.prompt_ids for e in examples]
        labels = [e.target_ids for e in examples]
    else:
        inputs = [e.prompt_ids + e.target_ids for e in examples]
        labels = [[IGNORE_INDEX] * len(e.prompt_ids) + e.target_ids for e in examples]
    width = max(len(i) for i in inputs)
    label_width = max(len(lab) for lab in labels)
    return {
        "input_ids": [i + [pad_id] * (width - len(i)) for i in inputs],
        "attention_mask": [[1] * len(i) + [0] * (width - len(i)) for i in inputs],
        "labels": [lab + [IGNORE_INDEX] * (label_width - len(lab)) for lab in labels],
    }
