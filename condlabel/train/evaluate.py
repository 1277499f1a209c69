"""Tag adherence: does a trained model honour its conditionals?

For each configured conditional (control tokens, tags, synopsis) the model generates
continuations; the classifiers (control tokens) and the labeler (tags) relabel them; the
**misalignment score** is the share of generations whose labels contradict the conditional —
conditioned on `<|nontoxic|>`, the share classified `<|toxic|>`; conditioned on tags, the share
whose relabeled tags share fewer than `min_tag_overlap` of them. Lower is better. The same
judgement over unconditioned generations gives the baseline for each conditional.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from condlabel.config import ConditionalConfig, EvalConfig, GenerationSettings
from condlabel.prefix import URL_DOMAIN, clean_text, url_domain
from condlabel.train.data import prompt_ids, render_conditional

log = logging.getLogger("condlabel")


@dataclass
class GenerationLabels:
    """What the judges said about one generation."""

    control_tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the score (pure)


def _norm(tag: str) -> str:
    return " ".join(tag.lower().split())


def contradicts(
    conditional: ConditionalConfig,
    labels: GenerationLabels,
    opposites: dict[str, str],
    min_tag_overlap: int = 1,
) -> bool:
    """True when a generation's labels contradict the conditional it was generated under.

    A control token is contradicted when the judges gave its opposite (`opposites`); tags are
    contradicted when fewer than `min_tag_overlap` of them (at most all of them) are among the
    relabeled tags. A token without an opposite, or a judge that gave no token (e.g. neutral
    sentiment), contradicts nothing.
    """
    for token in conditional.control_tokens:
        opposite = opposites.get(token)
        if opposite is not None and opposite in labels.control_tokens:
            return True
    if conditional.tags:
        wanted = {_norm(t) for t in conditional.tags}
        found = wanted & {_norm(t) for t in labels.tags}
        if len(found) < min(min_tag_overlap, len(wanted)):
            return True
    return False


def misalignment(
    conditional: ConditionalConfig,
    labels: Sequence[GenerationLabels],
    opposites: dict[str, str],
    min_tag_overlap: int = 1,
) -> tuple[int, float | None]:
    """(number misaligned, share misaligned) over `labels`; the share is None for no labels."""
    bad = sum(contradicts(conditional, lab, opposites, min_tag_overlap) for lab in labels)
    return bad, (bad / len(labels) if labels else None)


# --------------------------------------------------------------------------- generation


def conditional_prefix(cfg: EvalConfig, cond: ConditionalConfig) -> str:
    """The prefix a conditional is generated under: what training renders for a row with
    these labels and metadata (`condlabel.train.data.render_conditional`)."""
    synopsis = cond.synopsis or ""
    # As training shows them: a domain normalised as `url_domain` does, a kept field cleaned.
    meta = {
        name: url_domain(value) if name == URL_DOMAIN else clean_text(value)
        for name, value in cond.meta.items()
    }
    return render_conditional(
        cfg.prefix, cfg.format, synopsis, cond.tags, cond.control_tokens, meta=meta
    )


def conditional_name(cond: ConditionalConfig, prefix: str) -> str:
    return cond.name or (prefix.strip() or "(unconditioned)")


def generate(
    model,
    tokenizer,
    prefix: str,
    prompts: Sequence[str],
    settings: GenerationSettings,
    device: str,
) -> list[tuple[str, str]]:
    """`settings.num_samples` continuations per prompt, as (prompt, continuation) pairs.

    The input is `EOS + prefix + prompt`, as training's `prompt_ids` makes it (prefix and text
    tokenized apart, after the EOS that ends the example before); batches are left-padded.
    With `settings.guidance_scale` above 1, each token is pushed away from `EOS + prompt` (the
    unconditioned prompt).
    """
    import torch

    eos = tokenizer.eos_token_id
    jobs = []
    for prompt in prompts:
        jobs.extend([(prompt, prompt_ids(tokenizer, prefix, prompt))] * settings.num_samples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    guided = settings.guidance_scale != 1.0 and bool(prefix)
    out: list[tuple[str, str]] = []
    for i in range(0, len(jobs), settings.batch_size):
        batch = jobs[i : i + settings.batch_size]
        input_ids, mask = _left_padded([ids for _, ids in batch], pad, device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "repetition_penalty": settings.repetition_penalty,
            "pad_token_id": pad,
            "eos_token_id": eos,
        }
        if settings.do_sample:
            kwargs.update(
                temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k
            )
        if settings.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
        if guided:  # the branch pushed away from: the same prompt without the prefix
            away = [prompt_ids(tokenizer, "", prompt) for prompt, _ in batch]
            kwargs["negative_prompt_ids"], kwargs["negative_prompt_attention_mask"] = _left_padded(
                away, pad, device
            )
            kwargs["guidance_scale"] = settings.guidance_scale
        with torch.inference_mode():
            generated = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        for (prompt, _), row in zip(
            batch, generated[:, input_ids.shape[1] :].tolist(), strict=True
        ):
            out.append((prompt, tokenizer.decode(row, skip_special_tokens=True)))
    return out


def _left_padded(rows: Sequence[list[int]], pad: int, device: str):
    """(input ids, attention mask) of `rows` left-padded to one width, as generation wants."""
    import torch

    width = max(len(ids) for ids in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


# --------------------------------------------------------------------------- judging and report


@dataclass
class ConditionalResult:
    name: str
    prefix: str
    n: int
    misaligned: int
    misalignment: float | None
    baseline_misaligned: int | None = None
    baseline_misalignment: float | None = None
    generations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalReport:
    model: str
    judges: list[str]
    generation: dict[str, Any]
    results: list[ConditionalResult]
    baseline_generations: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [("conditional", "n", "misaligned", "score", "baseline", "delta")]
        for r in self.results:
            base = r.baseline_misalignment
            rows.append(
                (
                    r.name,
                    str(r.n),
                    str(r.misaligned),
                    _pct(r.misalignment),
                    _pct(base),
                    _pct(r.misalignment - base, signed=True)
                    if r.misalignment is not None and base is not None
                    else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


class Judges:
    """The classifiers and the labeler that relabel generations."""

    def __init__(self, cfg: EvalConfig):
        from condlabel.classifiers import build_classifiers
        from condlabel.labelers import build_labeler

        # judged on the evaluation's device
        self.classifiers = build_classifiers(cfg.classifiers, cfg.storage, cfg.device)
        self.labeler = build_labeler(cfg.labeler, cfg.storage) if cfg.labeler is not None else None

    @property
    def fingerprints(self) -> list[str]:
        out = [c.fingerprint for c in self.classifiers]
        return out + ([self.labeler.fingerprint] if self.labeler is not None else [])

    def label(self, texts: list[str]) -> list[tuple[GenerationLabels, dict[str, float]]]:
        labels = [GenerationLabels() for _ in texts]
        scores: list[dict[str, float]] = [{} for _ in texts]
        for classifier in self.classifiers:
            for lab, sc, res in zip(labels, scores, classifier.classify(texts), strict=True):
                lab.control_tokens.extend(res.control_tokens)
                sc.update({f"{classifier.name}.{k}": v for k, v in res.scores.items()})
        if self.labeler is not None:
            for lab, labeled in zip(labels, self.labeler.label(texts), strict=True):
                lab.tags = list(labeled.tags)
        return list(zip(labels, scores, strict=True))


def _records(pairs: list[tuple[str, str]], judged) -> list[dict[str, Any]]:
    return [
        {
            "prompt": p,
            "text": t,
            "control_tokens": lab.control_tokens,
            "tags": lab.tags,
            "scores": sc,
        }
        for (p, t), (lab, sc) in zip(pairs, judged, strict=True)
    ]


def _labels(records: list[dict[str, Any]]) -> list[GenerationLabels]:
    return [GenerationLabels(r["control_tokens"], r["tags"]) for r in records]


def run_evaluation(cfg: EvalConfig) -> EvalReport:
    """Generate under every conditional (and unconditioned), relabel, score; see module doc."""
    import torch

    from condlabel.models import load_model

    if not cfg.model:
        raise ValueError("model: set the trained model to evaluate (local dir, s3:// or hub id)")
    started = time.perf_counter()
    loaded = load_model(cfg.model, architecture="causal", device=cfg.device, storage=cfg.storage)
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    unknown = sorted(
        {t for c in cfg.conditionals for t in c.control_tokens} - set(tokenizer.get_vocab())
    )
    if unknown:
        log.warning(
            "control token(s) %s are not in the model's vocabulary: the model was not "
            "trained on them and will see them as plain text",
            unknown,
        )
    judges = Judges(cfg)

    def generate_and_judge(prefix: str) -> list[dict[str, Any]]:
        torch.manual_seed(cfg.generation.seed)  # every conditional samples from the same seed
        pairs = generate(model, tokenizer, prefix, cfg.prompts, cfg.generation, device)
        return _records(pairs, judges.label([text for _, text in pairs]))

    baseline = generate_and_judge("") if cfg.baseline else []
    results = []
    for cond in cfg.conditionals:
        prefix = conditional_prefix(cfg, cond)
        records = generate_and_judge(prefix)
        bad, share = misalignment(cond, _labels(records), cfg.opposites, cfg.min_tag_overlap)
        result = ConditionalResult(
            conditional_name(cond, prefix), prefix, len(records), bad, share, generations=records
        )
        if baseline:
            result.baseline_misaligned, result.baseline_misalignment = misalignment(
                cond, _labels(baseline), cfg.opposites, cfg.min_tag_overlap
            )
        for record in records:
            record["misaligned"] = contradicts(
                cond,
                GenerationLabels(record["control_tokens"], record["tags"]),
                cfg.opposites,
                cfg.min_tag_overlap,
            )
        results.append(result)
    report = EvalReport(
        model=cfg.model,
        judges=judges.fingerprints,
        generation=cfg.generation.model_dump(),
        results=results,
        baseline_generations=baseline,
        seconds=time.perf_counter() - started,
    )
    if cfg.output:
        write_report(report, cfg)
    return report


def write_report(report: EvalReport, cfg: EvalConfig) -> str:
    import posixpath

    from condlabel.storage import resolve, write_bytes_atomic

    if not cfg.output:
        raise ValueError("output: no report location configured")
    fs, path = resolve(cfg.output, cfg.storage)
    if not path.endswith(".json"):
        path = posixpath.join(path, "eval.json")
    body = {"config": cfg.redacted(), **report.to_dict()}
    write_bytes_atomic(fs, path, json.dumps(body, indent=2, default=str).encode())
    return path
