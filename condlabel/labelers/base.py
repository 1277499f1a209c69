"""What every labeler is: the `Labeler` protocol, its `LabelResult`, and the fingerprint helpers.

A labeler takes a batch of chunk texts and returns one `LabelResult` per chunk; its
`fingerprint` (model, adapter, revision, prompt version, generation parameters) is stored with
every row so outputs of different labelers are never silently mixed. Backends import this
module only; the registry (`condlabel.labelers`) imports the backends, lazily.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class LabelResult:
    synopsis: str
    tags: list[str]
    raw_output: str
    parse_ok: bool
    logprob: float | None = None
    """Sum of raw log-probabilities of the generated tokens, EOS included; None without a model."""
    mean_logprob: float | None = None
    num_generated_tokens: int = 0
    truncated: bool = False
    """The chunk was cut to fit the labeler's input limit."""
    label_truncated: bool = False
    """The label was cut off: generation stopped at `max_new_tokens` without EOS, or the tag
    list was never closed. Its tags may end in a partial one."""
    input_tokens: int | None = None
    """Tokens of the chunk fed to the model (after truncation); None without a tokenizer."""
    padded_tokens: int | None = None
    """This chunk's share of the padded batch the model ran over (input + generated positions,
    padding included); summed over a run and divided by the useful tokens it gives the
    padding overhead. None without a model."""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Labeler(Protocol):
    @property
    def fingerprint(self) -> str: ...

    def label(self, texts: list[str]) -> list[LabelResult]: ...


def make_fingerprint(backend: str, params: dict[str, Any]) -> str:
    """`<backend>:<name>:<hash of every parameter that changes outputs>` — readable and exact."""
    blob = json.dumps(params, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = params.get("name") or params.get("model") or backend
    return f"{backend}:{name}:{digest}"


# Generation settings that only matter when sampling; left out of a greedy labeler's fingerprint.
SAMPLING_ONLY = frozenset({"temperature", "top_p", "top_k", "seed"})


def _short_name(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def generation_excluded(cfg: Any, runtime_only: set[str]) -> set[str]:
    """Config fields a generative labeler's fingerprint leaves out: the runtime-only ones,
    sampling settings when decoding greedily, and `constrain_format` while it is off (so the
    labelers that existed before it keep their fingerprints)."""
    exclude = set(runtime_only) | (set() if cfg.do_sample else set(SAMPLING_ONLY))
    if not getattr(cfg, "constrain_format", False):
        exclude.add("constrain_format")
    return exclude


def model_fingerprint(
    backend: str,
    cfg: Any,
    runtime_only: set[str],
    prompt_version: str,
    fixed: dict[str, Any] | None = None,
) -> str:
    """Fingerprint of a generative labeler from its config alone (no model load): every field
    but the runtime-only ones (and sampling settings when decoding greedily), named after the
    model and adapter; `fixed` adds settings that are no longer options."""
    exclude = generation_excluded(cfg, runtime_only)
    name = _short_name(cfg.model or "")
    if cfg.adapter:
        name += "+" + _short_name(cfg.adapter)
    return make_fingerprint(
        backend,
        {
            **(fixed or {}),
            **cfg.model_dump(exclude=exclude),
            "name": name,
            "prompt": prompt_version,
        },
    )
