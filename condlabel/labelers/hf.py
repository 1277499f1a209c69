"""The `hf` labeler: a transformers seq2seq or causal LM (optionally LoRA-merged) that writes
`Synopsis: ... Tags: [...]` for each chunk, scored by the log-probability of what it wrote.

One `label(texts)` call:
1. renders and tokenizes every chunk (`condlabel.labelers.encoding`, shared with `vllm`); an
   input longer than the model's limit is cut (the chunk text is shortened, the template and
   special tokens kept) and flagged `truncated`;
2. sorts the chunks by input length and splits them into calls of at most `max_batch_size`
   rows and `max_batch_tokens` padded positions;
3. seq2seq: encodes a call's inputs in groups of near-equal length (`encoder_groups`, at most
   `max_encoder_padding` padding share), then decodes step by step with the KV cache, dropping
   each row from the batch at its EOS (`_decode`), so little compute goes to padding on either
   side; causal LMs use `generate`;
4. picks tokens with a `StepScorer` (condlabel.labelers.scoring) in place of the sampler: it
   gathers the chosen token's raw log-probability at every step and picks the token greedily or
   by inverse-CDF sampling with a generator private to the chunk (seeded by the chunk text and
   `seed`, one draw per step), after the processors `generate(do_sample=True)` would run, in
   its order;
5. masks every position after a sequence's EOS and parses the text; a label that reached
   `max_new_tokens` without EOS (or left its tag list open) is flagged `label_truncated`.

`padded_tokens` per chunk counts the positions computed for it: its encoder group's width plus
its decoder steps (under `generate`: the call's padded input plus all of the call's steps).

Reproducibility: greedy outputs and all scores depend on the chunk and the config only, never on
batch mates; sampling too, because each row draws from its own generator. The limit, for both:
a padded batch runs matrix products of another shape than a chunk alone, so logits agree to
float rounding (~1e-6 in float32, ~1e-2 in bfloat16), not bit for bit; a token whose score ties
its runner-up within that rounding can flip, after which the two continuations differ. Samples
are reproducible on the same kind of device (torch's CPU and CUDA generators draw different
streams).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from condlabel.config import HFLabelerConfig, StorageConfig
from condlabel.labelers.base import LabelResult, model_fingerprint
from condlabel.labelers.encoding import prompt_encoding
from condlabel.labelers.memory import (
    BatchLimit,
    ChunkFailure,
    raise_failures,
    run_in_fitting_batches,
)
from condlabel.labelers.prompts import PROMPT_VERSION, parse_label

if TYPE_CHECKING:
    import torch

log = logging.getLogger("condlabel")

_RUNTIME_ONLY = {
    "device",
    "max_batch_size",
    "max_batch_tokens",
    "max_encoder_tokens",
    "max_encoder_padding",
    "cache_dir",
}
"""Options that change how fast, not what: outputs are batch-invariant."""
_FIXED = {"score": "raw"}
"""Settings that were options once and are fixed now, kept in the fingerprint so that outputs
labeled before still match."""
_POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def fingerprint(cfg: HFLabelerConfig) -> str:
    """From config alone (no model load): model, adapter, revisions, prompt, generation, score."""
    return model_fingerprint("hf", cfg, _RUNTIME_ONLY, PROMPT_VERSION, fixed=_FIXED)


def _declared_positions(config) -> int | None:
    """The positions a model config declares, if any (T5/UL2's relative positions have none)."""
    for name in _POSITION_LIMITS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def plan_batches(
    lengths: Sequence[int], max_rows: int, max_tokens: int, new_tokens: int
) -> list[list[int]]:
    """Indices grouped into `generate` calls: longest first (an out-of-memory shows at once),
    neighbours in length share a call, each call within `max_rows` rows and `max_tokens`
    positions (rows x (longest input + new_tokens)). A single over-long row still gets a call."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (
            len(current) + 1 > max_rows or (len(current) + 1) * (longest + new_tokens) > max_tokens
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def encoder_groups(lengths: Sequence[int], max_tokens: int, max_padding: float) -> list[range]:
    """Consecutive rows of a `generate` call grouped into encoder calls, each padded to its own
    longest row: a group is cut before a row that would take it over `max_tokens` padded
    positions (rows x longest) or over `max_padding` padding share (padded positions above
    (1 + max_padding) x the rows' own tokens). Rows sorted by length (as `plan_batches` gives
    them) make groups of near-equal length; a single row is always its own group."""
    groups: list[range] = []
    start, useful, longest = 0, 0, 0
    for i, n in enumerate(lengths):
        if i > start:
            wider = max(longest, n)
            padded = (i - start + 1) * wider
            if padded > max_tokens or padded > (1 + max_padding) * (useful + n):
                groups.append(range(start, i))
                start, useful, longest = i, 0, 0
        useful += n
        longest = max(longest, n)
    if lengths:
        groups.append(range(start, len(lengths)))
    return groups


class HFLabeler:
    """Loads the model once (per actor), then labels batches of chunk texts."""

    def __init__(self, cfg: HFLabelerConfig, storage: StorageConfig | None = None):
        from transformers import GenerationConfig

        from condlabel.models import load_model

        if not cfg.model:
            raise ValueError("labeler.model: required for backend `hf`")
        self.cfg = cfg
        self._fingerprint = fingerprint(cfg)
        loaded = load_model(
            cfg.model,
            cfg.adapter,
            revision=cfg.revision,
            adapter_revision=cfg.adapter_revision,
            architecture=cfg.architecture,
            device=cfg.device,
            dtype=cfg.dtype,
            storage=storage,
            cache_dir=cfg.cache_dir,
        )
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.seq2seq, self.device = loaded.seq2seq, loaded.device
        config = self.model.config
        # The same encoding as the vllm backend's (one function): template, cut, EOS, limit.
        self.encoding = prompt_encoding(
            self.tokenizer,
            cfg.prompt_template,
            configured_eos=(self.model.generation_config.eos_token_id, config.eos_token_id),
            positions=_declared_positions(config),
            causal=not self.seq2seq,
            max_new_tokens=cfg.max_new_tokens,
            max_input_tokens=cfg.max_input_tokens,
            model=cfg.model,
            section="labeler.hf",
        )
        self.eos_ids = self.encoding.eos_ids
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self._suffix = self.encoding.suffix
        # The labeler config is the whole of the generation settings (and of the fingerprint):
        # none of the checkpoint's generation defaults may add a processor behind our back.
        settings = {
            "max_new_tokens": cfg.max_new_tokens,
            "do_sample": False,  # the StepScorer samples; generate only takes its choice
            "num_beams": 1,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
            "use_cache": True,
        }
        if self.seq2seq:
            start = self.model.config.decoder_start_token_id
            settings["decoder_start_token_id"] = self.pad_id if start is None else start
        self.model.generation_config = GenerationConfig(**settings)
        self._generation_config = self.model.generation_config
        self.fits = BatchLimit()
        """Rows per `generate` call known to fit (set by an out-of-memory; memory.py)."""
        self.slots = _slots(self) if cfg.constrain_format else None

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def input_limit(self) -> int:
        return self.encoding.input_limit

    def encode(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """Token ids fed to the model for each chunk, and whether the chunk was cut."""
        return self.encoding.encode(texts)

    # ------------------------------------------------------------------ generation

    def _processors(self, scorer, program=None):
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        cfg = self.cfg
        chain = [scorer.first()]
        if program is not None:  # constrain_format: the slot's vocabulary, on the raw logits
            chain.append(program.mask())
        # The same processors, in the same order, as generate(do_sample=True, ...) would use.
        if cfg.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty))
        if cfg.do_sample:
            if cfg.temperature != 1.0:
                chain.append(TemperatureLogitsWarper(cfg.temperature))
            if cfg.top_k:
                chain.append(TopKLogitsWarper(cfg.top_k, min_tokens_to_keep=1))
            if cfg.top_p < 1.0:
                chain.append(TopPLogitsWarper(cfg.top_p, min_tokens_to_keep=1))
        chain.append(scorer.last())
        if program is not None:
            chain.append(program.advance())
        return LogitsProcessorList(chain)

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            # Encoder inputs pad on the right; decoder-only prompts on the left, so every row's
            # next token comes right after its own last token.
            span = slice(0, len(row)) if self.seq2seq else slice(width - len(row), width)
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return ids.to(self.device), mask.to(self.device)

    def _encode_in_slices(self, ids: torch.Tensor, mask: torch.Tensor):
        """Encoder states of a padded batch, computed a few rows at a time: each row's states
        depend on that row only, and the peak (attention scores and position bias, rows x
        heads x length^2) shrinks with the slice."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        rows = max(1, self.cfg.max_encoder_tokens // ids.shape[1])
        encoder = self.model.get_encoder()
        states = [
            encoder(
                input_ids=ids[i : i + rows], attention_mask=mask[i : i + rows]
            ).last_hidden_state
            for i in range(0, ids.shape[0], rows)
        ]
        return BaseModelOutput(last_hidden_state=torch.cat(states))  # type: ignore[arg-type]

    def _encode_grouped(self, rows: list[list[int]]):
        """Seq2seq: encoder states [B, W, d] of a call's rows (W = its longest row) and their
        mask, computed by `encoder_groups`: each group padded only to its own longest row, so
        little encoder compute goes to padding. A row's states depend on that row only; the
        positions past a row's end are masked. Also returns, per row, the padded width its
        group was encoded at (the encoder positions computed for it)."""
        import torch

        width = max(len(r) for r in rows)
        encoder = self.model.get_encoder()
        states = None
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        widths = [0] * len(rows)
        groups = encoder_groups(
            [len(r) for r in rows], self.cfg.max_encoder_tokens, self.cfg.max_encoder_padding
        )
        for group in groups:
            ids, group_mask = self._padded([rows[i] for i in group])
            hidden = encoder(input_ids=ids, attention_mask=group_mask).last_hidden_state
            if states is None:
                states = hidden.new_zeros((len(rows), width, hidden.shape[-1]))
            span = slice(group.start, group.stop)
            states[span, : ids.shape[1]] = hidden
            mask[span, : ids.shape[1]] = group_mask
            for i in group:
                widths[i] = ids.shape[1]
        return states, mask, widths

    def _decode(self, rows: list[list[int]], scorer, processors):
        """Seq2seq decoding, step by step with the KV cache, that drops every row at its EOS:
        the cache, encoder states and mask keep the rows still generating, so a step costs what
        its live rows cost (`generate` computes every row until the call's longest one stops).
        Same processors, same order and same token choice (the scorer's) as with `generate`;
        the processors see each live row's decoder ids, start token included, as there.
        Returns the generated ids [B, T] (padding after a row's EOS) and, per row, its encoder
        width; the decoder computed exactly the row's tokens up to and including its EOS."""
        import torch
        from transformers import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        states, mask, widths = self._encode_grouped(rows)
        size, limit = len(rows), self.cfg.max_new_tokens
        start = self._generation_config.decoder_start_token_id
        decoded = torch.full((size, limit + 1), self.pad_id, dtype=torch.long, device=self.device)
        decoded[:, 0] = start
        eos = torch.tensor(self.eos_ids, device=self.device)
        live = torch.arange(size, device=self.device)
        # Both caches, as `generate` makes them: left to itself the decoder would keep only the
        # self-attention one and recompute the cross-attention keys at every step.
        text_config = self.model.config.get_text_config(decoder=True)
        cache = EncoderDecoderCache(
            DynamicCache(config=text_config), DynamicCache(config=text_config)
        )
        scorer.size = size
        steps = 0
        for step in range(limit):
            outputs = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=mask,
                decoder_input_ids=decoded[live, step : step + 1],
                past_key_values=cache,
                use_cache=True,
            )
            cache = outputs.past_key_values
            logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32)
            del outputs
            scorer.rows = live
            processors(decoded[live, : step + 1], logits)
            decoded[live, step + 1] = scorer.choice
            steps = step + 1
            going = ~torch.isin(scorer.choice, eos)
            if not bool(going.any()):
                break
            if not bool(going.all()):
                keep = going.nonzero().squeeze(1)
                live, states, mask = live[keep], states[keep], mask[keep]
                cache.batch_select_indices(keep)
        scorer.rows = None
        generated = decoded[:, 1 : steps + 1]
        return generated, widths

    def _generate(self, rows: list[list[int]], texts: list[str]) -> list[dict]:
        import torch

        from condlabel.labelers.scoring import (
            StepScorer,
            chunk_seed,
            generated_lengths,
            label_score,
        )

        generators = None
        if self.cfg.do_sample:
            generators = []
            for text in texts:
                g = torch.Generator(device=self.device)
                g.manual_seed(chunk_seed(text, self.cfg.seed))
                generators.append(g)
        scorer = StepScorer(generators)
        program = self.slots.program(len(rows), scorer) if self.slots else None
        own_loop = self.seq2seq  # causal LMs: `generate`
        with torch.inference_mode():
            if own_loop:
                generated, widths = self._decode(rows, scorer, self._processors(scorer, program))
            else:
                ids, mask = self._padded(rows)
                extra = {}
                if self.seq2seq and ids.numel() > self.cfg.max_encoder_tokens:
                    extra["encoder_outputs"] = self._encode_in_slices(ids, mask)
                sequences = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=self._generation_config,
                    logits_processor=self._processors(scorer, program),
                    **extra,
                )
                generated = sequences[:, 1:] if self.seq2seq else sequences[:, ids.shape[1] :]
        steps = generated.shape[1]
        if program is not None:
            lengths = generated_lengths(generated, self.eos_ids)
            # positions computed per row: its encoder input (padding included) plus its
            # decoder steps (all the call's steps under `generate`)
            padded = [
                widths[i] + n if own_loop else ids.shape[1] + steps
                for i, n in enumerate(lengths.tolist())
            ]
            return program.outputs(generated, scorer.step_logprobs(steps), padded)
        step_logprobs = scorer.step_logprobs(steps).double().cpu().tolist()
        token_lists = generated.cpu().tolist()
        out = []
        for i, (tokens, logprobs) in enumerate(zip(token_lists, step_logprobs, strict=True)):
            # The one score definition (scoring.label_score): up to and including the first
            # EOS; a row cut at max_new_tokens is scored over its own tokens only.
            score = label_score(tokens, logprobs, self.eos_ids)
            n = score.num_tokens
            text_ids = score.tokens[:-1] if score.stopped else score.tokens
            out.append(
                {
                    "text": self.tokenizer.decode(text_ids, skip_special_tokens=False),
                    "logprob": score.logprob,
                    "mean_logprob": score.mean_logprob,
                    "num_generated_tokens": n,
                    "stopped": score.stopped,  # at EOS, not at max_new_tokens
                    # positions computed for this row: its encoder input (padding included)
                    # plus its decoder steps (all the call's steps under `generate`)
                    "padded_tokens": widths[i] + n if own_loop else ids.shape[1] + steps,
                    "extra": {"generated_ids": score.tokens},
                }
            )
        return out

    def label(self, texts: list[str]) -> list[LabelResult]:
        encoded = self.encode(texts)
        results: list[LabelResult | ChunkFailure | None] = [None] * len(texts)
        batches = plan_batches(
            [len(ids) for ids, _ in encoded],
            self.cfg.max_batch_size,
            self.cfg.max_batch_tokens,
            self.cfg.max_new_tokens,
        )
        for batch in batches:
            # Halved and retried on out-of-memory; `self.fits` keeps the size that fitted.
            outputs = run_in_fitting_batches(
                batch,
                lambda part: self._generate(
                    [encoded[i][0] for i in part], [texts[i] for i in part]
                ),
                self.fits,
                release=self._release_memory,
            )
            for i, out in zip(batch, outputs, strict=True):
                if isinstance(out, ChunkFailure):
                    results[i] = out
                    continue
                # A causal labeler prompted with "...Synopsis:" continues after the marker.
                parsed = parse_label(("" if self.seq2seq else self._suffix) + out["text"])
                results[i] = LabelResult(
                    synopsis=parsed.synopsis,
                    tags=parsed.tags,
                    raw_output=out["text"],
                    parse_ok=parsed.ok,
                    logprob=out["logprob"],
                    mean_logprob=out["mean_logprob"],
                    num_generated_tokens=out["num_generated_tokens"],
                    truncated=encoded[i][1],
                    label_truncated=parsed.truncated or not out["stopped"],
                    input_tokens=len(encoded[i][0]),
                    padded_tokens=out["padded_tokens"],
                    extra=out["extra"],
                )
        return raise_failures([r for r in results if r is not None])

    def _release_memory(self) -> None:
        """After an out-of-memory: hand the allocator's cached blocks back before the retry."""
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()


def _slots(labeler: HFLabeler):
    """The slot program's plan and masks (`constrain_format`), built once per labeler."""
    from condlabel.labelers.constrained import slot_plan
    from condlabel.labelers.constrained_hf import HFSlots

    plan = slot_plan(
        labeler.tokenizer,
        labeler.eos_ids,
        vocab_size=labeler.model.get_output_embeddings().weight.shape[0],
        max_new_tokens=labeler.cfg.max_new_tokens,
        prompt_suffix=labeler.encoding.suffix,
        causal=not labeler.seq2seq,
        section="labeler.hf",
    )
    return HFSlots(plan, labeler.device)
