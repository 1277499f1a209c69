"""Keys a config may no longer hold, and what replaces each: checked before validation, so an
old config fails naming the new place (or the fixed value) rather than with "unknown key".

`REMOVED_KEYS` is by config kind (`storage`: the storage section alone, as `inspect`, `status`
and `merge` read it): dotted pattern -> what to do instead. A pattern segment `*` matches any
key or list index, `a|b` either name; the problem is reported once, for the key itself, not for
what it holds. `(pattern, value)` matches only that value. `{last}` in a message is the key's
last part, `{at}` where a labeler section sits ("labeler." in a conversion, "" in a labeler
file)."""

from __future__ import annotations

from typing import Any

MEASURED = "measured not to help; see bench/README.md"
_SPLIT_NEUTRAL = (
    f"split_neutral was removed ({MEASURED}); use three_way or binary, or give a neutral "
    "text a token of its own under three_way (`tokens: {neutral: ...}`)"
)
_GENERATION = "max_new_tokens|do_sample|temperature|top_p|top_k|repetition_penalty|seed"
LABELER_MOVED: dict[str | tuple[str, Any], str] = {
    f"hf|vllm|ct2.{_GENERATION}": "moved to {at}generation.{last} (one generation section for "
    "every generative backend)",
    "hf|vllm|ct2.model|revision|cache_dir": "moved to {at}{last} (one place for every backend)",
    "hf.score": "removed: `logprob` is always the raw, batch-invariant score (the seed code's "
    "score served only for comparison: bench/labeler_vs_reference.py)",
    "hf.merge_adapter": "removed: an adapter is always merged at load (merged and unmerged "
    "give the same outputs)",
}
_CLASSIFIER_DEVICE = (
    "removed: a classifier runs on its actor's GPU when it has one (`condlabel eval`: its "
    "`device`), in bfloat16 there and float32 on the CPU"
)
_CLASSIFIER_LENGTH = (
    "removed: a classifier reads at most 512 tokens of a text, fewer when its model's limit is "
    "lower (condlabel.classifiers.CLASSIFIER_MAX_TOKENS)"
)
_TORCH_THREADS = (
    "removed: a worker on CPU runs torch on max(1, floor(compute.cpus_per_worker)) threads"
)
_LABELER_FILE = (
    "a labeler config file (the keys of a `labeler:` section at its top level; "
    "`condlabel config --kind labeler` checks one)"
)
_STORAGE_TIMEOUTS: dict[str | tuple[str, Any], str] = {
    "storage.connect_retries|connect_timeout_s|read_timeout_s": "removed: a tuned internal, now "
    "fixed: an unreachable endpoint is retried 3 times, 5 s to connect and 60 s to read "
    "(condlabel.s3.CONNECT_RETRIES, condlabel.storage.CONNECT_TIMEOUT_S and READ_TIMEOUT_S); "
    "storage.retries still sets the retries of a failed request",
}
_LORA_DROPOUT = "removed: LoRA dropout is fixed at 0.05 (condlabel.train.checkpoint.LORA_DROPOUT)"
_MIN_LR_RATIO = (
    "removed: a decaying schedule always ends at 0.1 x the peak learning rate "
    "(condlabel.train.optim.MIN_LR_RATIO)"
)
REMOVED_KEYS: dict[str, dict[str | tuple[str, Any], str]] = {
    "convert": {
        **{f"labeler.{k}" if isinstance(k, str) else k: m for k, m in LABELER_MOVED.items()},
        "cascade.teacher": f"moved to a file of its own: put the teacher in {_LABELER_FILE} "
        "and set cascade.teacher_config to its path",
        "classifiers.*.hf.device|dtype": _CLASSIFIER_DEVICE,
        "classifiers.*.hf.max_length": _CLASSIFIER_LENGTH,
        "input.docs_per_batch": "removed: it only set the rows a parquet input is decoded at "
        "a time, now fixed (condlabel.convert.reading.PARQUET_BATCH_ROWS)",
        "compute.bytes_per_read_task": "removed: a tuned internal, now fixed at 64 MiB "
        "(condlabel.convert.inputs.BYTES_PER_READ_TASK; bench/small_files.py)",
        "compute.key_pass_driver_bytes": "removed: a tuned internal, now fixed at 32 MiB "
        "(condlabel.convert.graph_steps.KEY_PASS_DRIVER_BYTES)",
        ("classifiers.*.vader.mode", "split_neutral"): _SPLIT_NEUTRAL,
        "output.allow_mixed_labelers": "removed: one place for one choice, the --allow-mixed flag "
        "of `condlabel convert` (a run mixes labelers only when told so on its command line)",
        "output.use_ledger": "folded into output.done_check: `full` reads every input file and "
        "checks the whole output (what use_ledger=false did), `auto` (the default) trusts the "
        "ledger's newest entry per file",
        **_STORAGE_TIMEOUTS,
    },
    "train": {
        "data.seed": "moved to optimization.seed (one seed for the run)",
        "data.rows_per_batch|materialize_max_rows": "removed: a tuned internal, now fixed "
        "(condlabel.train.data.ROWS_PER_BATCH, condlabel.train.dataset.MATERIALIZE_MAX_ROWS)",
        "compute.torch_threads": _TORCH_THREADS,
        "data.control_token_balance|control_token_max_repeats": f"removed: {MEASURED} (it did "
        "not get the rare token learned)",
        "optimization.min_lr_ratio": _MIN_LR_RATIO,
        "model.lora.dropout": _LORA_DROPOUT,
        **_STORAGE_TIMEOUTS,
    },
    "labeler": LABELER_MOVED,
    "eval": {
        "labeler": f"moved to a file of its own: put it in {_LABELER_FILE} and set "
        "labeler_config to its path",
        "format": "eval renders only the prefix template: format.prefix_template moved to "
        "prefix_template",
        "classifiers.*.hf.device|dtype": _CLASSIFIER_DEVICE,
        "classifiers.*.hf.max_length": _CLASSIFIER_LENGTH,
        "generation.guidance_against": "removed: guidance is always against the unconditioned "
        f"prompt (`opposite`: {MEASURED})",
        ("classifiers.*.vader.mode", "split_neutral"): _SPLIT_NEUTRAL,
        **_STORAGE_TIMEOUTS,
    },
    "distill": {
        "compute.torch_threads": _TORCH_THREADS,
        "optimization.min_lr_ratio": _MIN_LR_RATIO,
        "student.lora.dropout": _LORA_DROPOUT,
        "student.architecture": "removed: whether the student is seq2seq or causal is read from "
        "its model config (`is_encoder_decoder`), as the labeler reads it",
        "gate.calibration_bins": "removed: the calibration table has 5 quantile bins "
        "(condlabel.distill.metrics.CALIBRATION_BINS)",
        "gate.batch_size": "removed: a tuned internal, now fixed at 16 chunks per student call "
        "(condlabel.distill.student.GATE_BATCH_SIZE)",
        "gate.do_sample": "removed: the gate labels greedily, so its verdict is deterministic; "
        "sampling is the conversion's choice (labeler.generation.do_sample)",
        "optimization.shuffle_buffer_rows": "removed: a tuned internal, now fixed at 256 rows "
        "(condlabel.distill.loop.SHUFFLE_BUFFER_ROWS)",
        **_STORAGE_TIMEOUTS,
    },
    "storage": _STORAGE_TIMEOUTS,
}


def _walk(node: Any, path: tuple[str, ...] = ()) -> Any:
    """(path, value) of every node of a loaded YAML mapping, list items by index."""
    yield path, node
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield from _walk(child, (*path, str(key)))


def _matches(pattern: list[str], path: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(
        want == "*" or part in want.split("|") for want, part in zip(pattern, path, strict=True)
    )


def removed_key_problems(kind: str, data: dict[str, Any]) -> list[str]:
    """One problem per removed key (or removed value) `data` still uses, naming what replaces it."""
    problems = []
    at = "labeler." if kind == "convert" else ""
    for entry, message in REMOVED_KEYS.get(kind, {}).items():
        pattern, value = (entry, None) if isinstance(entry, str) else entry
        parts = pattern.split(".")
        for path, node in _walk(data):
            if _matches(parts, path) and (value is None or node == value):
                shown = message.replace("{at}", at).replace("{last}", path[-1])
                problems.append(f"{'.'.join(path)}: {shown}")
    return problems
