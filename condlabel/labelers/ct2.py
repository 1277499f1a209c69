"""The `ct2` labeler: a T5-family (encoder-decoder) labeler on CTranslate2, int8 by default.

vLLM serves no encoder-decoder but Whisper, so the reference labeler (flan-ul2 + LoRA) runs
either on `hf` (transformers) or here: CTranslate2's fused kernels with int8, int8_float16,
bfloat16 or float32 weights, on CPU or GPU. One `Translator` per actor. The model is a
CTranslate2 directory written by `condlabel merge --format ct2` (LoRA merged first, tokenizer
beside it), local, on s3:// (fetched once per node into the model cache) or on a hub.

One `label(texts)` call:
1. encodes every chunk with the encoding the `hf` and `vllm` backends use
   (`condlabel.labelers.encoding`): same template, same cut, same `truncated` flag;
2. hands the token strings to `translate_batch`, which sorts them by length and splits them
   into batches of `max_batch_size` examples (or tokens); CTranslate2's own input cut is off
   (`max_input_length=0`): the shared encoding decides;
3. reads each hypothesis (EOS included when it stopped) and its tokens' log-probabilities,
   scores it with `scoring.label_score` and parses the text.

Scores have the `hf` definition, computed by the same function (`scoring.label_score`): the
sum of the model's raw log-probabilities of the generated tokens, EOS included when generated.
Each token's log-probability comes from CTranslate2's step callback (raw, taken before
temperature, top-k and top-p, as tests/test_ct2_labeler.py checks with `score_batch`); the
hypothesis' own score is not used, so a label cut at `max_decoding_length` is scored over exactly
the tokens it holds. The options still matter: `min_decoding_length=1` (its default) would
forbid EOS at the first step and renormalise that step's distribution.

Reproducibility: greedy labels depend on the chunk and the config only (batch mates change
float rounding, ~1e-6 in float32, not the math). Sampling is NOT reproducible per chunk:
CTranslate2 has no per-request seed. `seed` seeds its generator once, when the labeler loads;
each worker thread then draws one stream for all the batches it decodes, so a chunk's sample
depends on its batch mates and on what the actor labeled before. A fresh actor fed the same
batches in the same order (inter_threads 1) repeats its samples; a Ray run gives no such order.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condlabel.ct2_convert import require_ct2
from condlabel.labelers.base import LabelResult, generation_excluded, make_fingerprint
from condlabel.labelers.encoding import prompt_encoding
from condlabel.labelers.memory import BatchLimit, raise_failures, run_in_fitting_batches
from condlabel.labelers.prompts import PROMPT_VERSION
from condlabel.labelers.results import generated_label

if TYPE_CHECKING:
    from condlabel.config import StorageConfig
    from condlabel.config.labelers import CT2LabelerConfig
    from condlabel.labelers.constrained import SlotPlan

log = logging.getLogger("condlabel")

CT2_WEIGHTS = "model.bin"
"""CTranslate2's weight file (its own format, not a pickle)."""
MERGE_INFO = "condlabel_merge.json"

_RUNTIME_ONLY = {"device", "inter_threads", "intra_threads", "max_batch_size", "batch_type"}
"""Options that change how fast, not what (`cache_dir` too); `compute_type` is not one of them:
int8 and float32 weights are different labelers."""


def fingerprint(cfg: CT2LabelerConfig) -> str:
    """From config alone: model, revision, compute type, prompt, generation settings."""
    exclude = generation_excluded(cfg, _RUNTIME_ONLY | {"cache_dir"})
    name = (cfg.model or "").rstrip("/").rsplit("/", 1)[-1] or "ct2"
    params = cfg.model_dump(exclude=exclude)
    return make_fingerprint("ct2", {**params, "name": name, "prompt": PROMPT_VERSION})


def pick_device(ctranslate2: Any, device: str) -> str:
    """`auto` -> `cuda` when this process sees a GPU (a Ray actor sees the one it reserved)."""
    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device == "cuda" and not gpus:
        raise RuntimeError("labeler.ct2.device: `cuda` requested but no GPU is visible")
    return device


def fetch_ct2_model(
    uri: str, revision: str | None, storage: StorageConfig | None, cache_dir: str | None
) -> str:
    """A local CTranslate2 model directory: local as is, s3:// through the node's locked cache,
    a hub id through the hub's cache."""
    from condlabel.models import fetch_model

    path = fetch_model(uri, storage, cache_dir)
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, revision=revision)
    if not os.path.isfile(os.path.join(path, CT2_WEIGHTS)):
        found = sorted(p.name for p in Path(path).iterdir())
        raise FileNotFoundError(
            f"labeler.model {uri}: not a CTranslate2 model (no {CT2_WEIGHTS}; found: "
            f"{', '.join(found) or 'nothing'}); write one with `condlabel merge --format ct2`"
        )
    return path


_LIVE: weakref.WeakSet[CT2Labeler] = weakref.WeakSet()


@atexit.register
def _drop_translators() -> None:
    """CTranslate2 4.8 aborts the process at exit ("terminate called without an active
    exception") when a Translator that ran a step callback is destroyed while the interpreter
    is being torn down; dropped here, while it is whole, it is destroyed cleanly."""
    for labeler in list(_LIVE):
        labeler.translator = None


class CT2Labeler:
    """Loads one CTranslate2 `Translator` (per actor), then labels batches of chunk texts."""

    def __init__(self, cfg: CT2LabelerConfig, storage: StorageConfig | None = None):
        if not cfg.model:
            raise ValueError("labeler.model: required for backend `ct2`")
        ctranslate2 = require_ct2()
        self.cfg = cfg
        self._fingerprint = fingerprint(cfg)
        path = fetch_ct2_model(cfg.model, cfg.revision, storage, cfg.cache_dir)
        device = pick_device(ctranslate2, cfg.device)
        _refuse_half_t5(path, cfg)
        supported = ctranslate2.get_supported_compute_types(device)
        if cfg.compute_type not in supported:
            # CTranslate2 would fall back to another type: the fingerprint would then lie.
            raise ValueError(
                f"labeler.ct2.compute_type: {cfg.compute_type} is not supported on {device} "
                f"here (supported: {', '.join(sorted(supported))})"
            )
        # Seeded before the translator's threads exist: they seed their generators from it.
        ctranslate2.set_random_seed(cfg.seed)
        self.translator = ctranslate2.Translator(
            path,
            device=device,
            compute_type=cfg.compute_type,
            inter_threads=cfg.inter_threads,
            intra_threads=cfg.intra_threads,
        )
        self.tokenizer = load_ct2_tokenizer(path)
        info = _merge_info(path)
        # The same encoding as the hf backend's (one function); EOS as hf resolved it at export.
        self.encoding = prompt_encoding(
            self.tokenizer,
            cfg.prompt_template,
            configured_eos=(info.get("eos_token_ids"), _ct2_eos(path, self.tokenizer)),
            positions=None,  # T5/UL2: relative positions, no declared limit
            causal=False,
            max_new_tokens=cfg.max_new_tokens,
            max_input_tokens=cfg.max_input_tokens,
            model=cfg.model,
            section="labeler.ct2",
        )
        self.eos_ids = self.encoding.eos_ids
        self.fits = BatchLimit()
        """Chunks per `translate_batch` call known to fit (set by an out-of-memory)."""
        _LIVE.add(self)
        self.slot_plan: SlotPlan | None = None
        self.slot_banned: dict[str, list[list[str]]] = {}
        if cfg.constrain_format:  # labels that always parse: condlabel.labelers.constrained
            from condlabel.labelers.constrained_engines import ct2_banned, engine_plan

            self.slot_plan = engine_plan(self, len(self.tokenizer), "labeler.ct2", causal=False)
            self.slot_banned = ct2_banned(self.slot_plan, self.tokenizer)
        log.info("loaded %s on CTranslate2 (%s on %s)", cfg.model, cfg.compute_type, device)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def input_limit(self) -> int:
        return self.encoding.input_limit

    def _options(self) -> dict[str, Any]:
        cfg = self.cfg
        sampling = (
            {
                "sampling_topk": cfg.top_k,  # 0: the whole vocabulary, as hf's top_k=0
                "sampling_topp": cfg.top_p,
                "sampling_temperature": cfg.temperature,
            }
            if cfg.do_sample
            else {"sampling_topk": 1}
        )
        return {
            "max_batch_size": cfg.max_batch_size,
            "batch_type": cfg.batch_type,
            "beam_size": 1,
            "max_decoding_length": cfg.max_new_tokens,
            "min_decoding_length": 0,  # EOS allowed from the first step, as with hf
            "length_penalty": 0,  # scores are sums, not divided by the length
            "repetition_penalty": cfg.repetition_penalty,
            "end_token": self.eos_ids,
            "return_end_token": True,
            "return_scores": True,
            "max_input_length": 0,  # the shared encoding has cut the inputs already
            **sampling,
        }

    def label(self, texts: list[str]) -> list[LabelResult]:
        if not texts:
            return []
        if self.slot_plan is not None:
            from condlabel.labelers.constrained_engines import ct2_label

            return ct2_label(self, texts)
        encoded = self.encoding.encode(texts)
        # Halved and retried on out-of-memory; `self.fits` keeps the size that fitted.
        return raise_failures(run_in_fitting_batches(encoded, self._translate, self.fits))

    def _translate(self, encoded: list[tuple[list[int], bool]]) -> list[LabelResult]:
        sources = [self.tokenizer.convert_ids_to_tokens(ids) for ids, _ in encoded]
        steps: dict[int, dict[int, tuple[int, float]]] = {i: {} for i in range(len(encoded))}

        def record(step) -> bool:
            # One call per generated token (batch_id: the index in `sources`, whatever
            # sub-batches CTranslate2 makes): its id and raw log-probability.
            steps[step.batch_id][step.step] = (step.token_id, step.log_prob)
            return False  # never stop the decoding

        outputs = self.translator.translate_batch(sources, callback=record, **self._options())
        results = []
        for i, ((ids, truncated), output) in enumerate(zip(encoded, outputs, strict=True)):
            tokens = self.tokenizer.convert_tokens_to_ids(output.hypotheses[0])
            results.append(
                generated_label(
                    self.tokenizer,
                    tokens,
                    self.eos_ids,
                    _token_logprobs(tokens, steps[i]),
                    truncated=truncated,
                    input_tokens=len(ids),
                    padded_tokens=None,  # CTranslate2 does not report its padding
                )
            )
        return results


def _token_logprobs(tokens: list[int], steps: dict[int, tuple[int, float]]) -> list[float]:
    """The raw log-probability of each token of a hypothesis, from the step callback's records;
    a step the hypothesis does not hold is not scored (`scoring.label_score` sums these)."""
    recorded = [steps[k] for k in sorted(steps)]
    if [token for token, _ in recorded[: len(tokens)]] != list(tokens):
        raise RuntimeError(
            f"ct2: the decoding steps reported ({len(recorded)}) do not match the hypothesis "
            f"({len(tokens)} tokens); cannot score it"
        )
    return [logprob for _, logprob in recorded[: len(tokens)]]


def load_ct2_tokenizer(path: str) -> Any:
    """The tokenizer `AutoTokenizer` loads from a CTranslate2 model directory, without torch.

    AutoTokenizer imports transformers' generation code, which imports torch: ~330 MB of RSS
    in every ct2 actor (measured, bench/README.md) for a backend that runs no torch. The class
    that tokenizer_config.json names is taken from transformers directly, as AutoTokenizer
    resolves it (`X` or `XFast`; the Python backend -> the tokenizers backend); a directory
    that needs more (remote code, no tokenizer.json) goes through AutoTokenizer."""
    import transformers

    settings_file = Path(path, "tokenizer_config.json")
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    name = str(settings.get("tokenizer_class") or "").removesuffix("Fast")
    if not name or "auto_map" in settings or not Path(path, "tokenizer.json").is_file():
        from condlabel.models import load_tokenizer

        return load_tokenizer(path, None)
    cls = _tokenizer_class(transformers, name, settings_file)
    if cls is None or cls.__name__ == "PythonBackend":
        cls = transformers.TokenizersBackend
    return cls.from_pretrained(path)


def _tokenizer_class(transformers: Any, name: str, settings_file: Path) -> Any:
    """The tokenizer class `name` (or `nameFast`) of transformers, None when it has none; a
    name that is something else there (a model class, a function) is refused: the file names
    what gets loaded, and only a tokenizer may be loaded as the tokenizer."""
    base = transformers.PreTrainedTokenizerBase
    for candidate in (name, f"{name}Fast"):
        found = getattr(transformers, candidate, None)
        if found is None:
            continue
        if isinstance(found, type) and issubclass(found, base):
            return found
        what = "a class that is no tokenizer" if isinstance(found, type) else "no class"
        raise ValueError(
            f"{settings_file}: tokenizer_class {name!r} is {what} in transformers; only a "
            "tokenizer class is loaded as the tokenizer: set it to the tokenizer's class (e.g. "
            "T5TokenizerFast), or write the model again with `condlabel merge --format ct2`"
        )
    return None


def _refuse_half_t5(path: str, cfg: CT2LabelerConfig) -> None:
    """float16 compute (`float16`, `int8_float16`) is refused for a T5-family model: its
    activations overflow float16. The family is the one `condlabel merge` recorded; a model
    converted elsewhere counts as T5 when it decodes from the padding token, as T5 does."""
    from condlabel.models import CT2_FLOAT16, T5_FAMILY, refuse_t5_float16

    if cfg.compute_type not in CT2_FLOAT16:
        return
    model_type = _merge_info(path).get("model_type")
    if model_type is None:
        config = Path(path, "config.json")
        settings = json.loads(config.read_text()) if config.is_file() else {}
        t5 = settings.get("decoder_start_token") == "<pad>"
    else:
        t5 = str(model_type).lower() in T5_FAMILY
    if t5:
        refuse_t5_float16("labeler.ct2.compute_type", cfg.compute_type, cfg.model or path)


def _merge_info(path: str) -> dict[str, Any]:
    info = Path(path, MERGE_INFO)
    return json.loads(info.read_text()) if info.is_file() else {}


def _ct2_eos(path: str, tokenizer: Any) -> int | None:
    """The EOS id of a CTranslate2 model's own config (it names the token, not its id)."""
    config = Path(path, "config.json")
    token = json.loads(config.read_text()).get("eos_token") if config.is_file() else None
    return tokenizer.convert_tokens_to_ids(token) if token else None
