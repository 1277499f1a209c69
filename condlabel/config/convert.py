"""Settings of a conversion run (`condlabel convert`): input, chunking, labeler, format,
output, compute, storage and classifiers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from condlabel.config.cascade import CascadeConfig
from condlabel.config.classifiers import ClassifierConfig
from condlabel.config.common import (
    META_FIELD,
    URL_DOMAIN_FIELD,
    FormatConfig,
    RayConnection,
    RunConfig,
    StorageConfig,
    StrictModel,
    template_fields,
)
from condlabel.config.labelers import LabelerConfig

KeptFieldType = Literal["string", "int64", "float64", "bool", "timestamp"]
"""The types a kept input field can be declared as (`condlabel.schema.KEPT_FIELD_TYPES`)."""


class InputConfig(StrictModel):
    paths: list[str] = Field(default_factory=list)
    """Input files, directories/prefixes or globs (local path, file://, s3://). Several allowed."""
    text_field: str = "text"
    """Field (JSON key or parquet column) holding the document text."""
    id_field: str = "id"
    """Field holding the document id. A document without one gets `auto-` + a hash of its text,
    so moving, renaming or recompressing a file keeps its ids; a second id-less copy of the same
    text in one file is labeled once and rejected as `duplicate_text`."""
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    """File format; `auto` decides by extension (.jsonl, .json, .jsonl.gz, .jsonl.zst, .parquet;
    .txt and .md: `text`, one document per file, its id the path under its input)."""
    sample_fraction: float = Field(1.0, gt=0, le=1)
    """Label only the documents whose id hash falls below this fraction (`--sample-fraction`):
    a deterministic sample, the same in every run; a larger fraction keeps every document of a
    smaller one, so a sample is extended by rerunning with a larger one. 1 labels everything."""
    sample_stratified: bool = False
    """With sample_fraction below 1, every input file keeps at least one document (the one with
    the lowest id hash) even when none of its ids falls in the fraction, so every shard of the
    corpus is represented (`--sample-stratified`)."""
    keep_fields: list[str] | dict[str, KeptFieldType] = Field(default_factory=list)
    """Input fields kept as output columns of the same name: a list (`[url, date]`, each a
    string) or a mapping that declares types (`{url: string, score: float64, crawled:
    timestamp}`; types: string, int64, float64, bool, timestamp). Every shard has each column
    with its type, null where a record lacks the field; a value that is not of its type makes
    the record a reject (`invalid_kept_field`). A name of the output contract is refused, and so
    is a field that no document of the first input file has. The prefix can show them
    (`{meta.NAME}`, `{url_domain}`); labels never depend on them."""
    url_field: str = "url"
    """The kept field holding a document's URL, whose host `{url_domain}` shows."""

    @field_validator("keep_fields")
    @classmethod
    def _kept_names(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        names = list(value)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"field(s) {repeated} listed twice")
        bad = [n for n in names if not n.strip() or n.startswith(("_", "."))]
        if bad:
            raise ValueError(
                f"field name(s) {bad}: empty names and names starting with `_` or `.` "
                "(bookkeeping) cannot be output columns"
            )
        return value

    @property
    def kept_types(self) -> dict[str, str]:
        """Each kept field and its declared type."""
        if isinstance(self.keep_fields, dict):
            return dict(self.keep_fields)
        return {name: "string" for name in self.keep_fields}


class ChunkConfig(StrictModel):
    unit: Literal["window", "sentence"] = "window"
    """`window`: chunks of up to max_words words on paragraph/sentence boundaries (for the
    synopsis+tags labeler); `sentence`: one chunk per sentence (for control-token datasets like
    the reference's; sentences longer than max_words are split)."""
    max_words: int = Field(2000, ge=1)
    """Largest chunk, in whitespace-separated words (the reference labeler reads ~2,000 words)."""
    min_words: int | None = Field(None, ge=1)
    """Window unit: smallest trailing chunk before it is merged or rebalanced (default
    max_words // 4). Sentence unit: sentences with fewer words are dropped and counted
    (default 1: keep all)."""
    max_word_chars: int = Field(10_000, ge=1)
    """Longest run of non-space characters (a DNA sequence, base64, minified code) that reaches
    a labeler whole: a longer one is cut into pieces of this many characters, each a chunk of
    its own that counts as one word. Bounds what one chunk costs: some labelers are quadratic in
    word length. Documents without such a run are chunked (and hashed) as before."""

    @property
    def effective_min_words(self) -> int:
        if self.min_words is not None:
            return self.min_words
        return 1 if self.unit == "sentence" else max(1, self.max_words // 4)


class OutputConfig(StrictModel):
    uri: str = "./condlabel-output"
    """Output prefix (local path, file:// or s3://) that receives the tagged parquet shards."""
    rows_per_file: int = Field(512, ge=1)
    """Rows per parquet shard; smaller shards lose less work if a run is killed (a killed actor
    loses at most about one block of `compute.block_bytes`)."""
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    """Parquet compression codec."""
    lease_ttl_s: float = Field(300.0, ge=1)
    """Seconds a run's writer lease lives without renewal (renewed every ttl/4 while the run
    lives). A killed run's lease is taken over at once when it ran on the same machine (its pid
    is gone), else after this long; a run paused past it stops writing (exit 4)."""
    done_check: Literal["auto", "full"] = "auto"
    """How a run learns what is already done. `auto`: input files whose newest `_ledger/` entry
    matches (same path under the input, size, ETag/mtime, input fields, chunking and labeler)
    are not opened; for the files read, the done check reads the shards written since an
    earlier run started them, none for files no run started, and the whole output when that
    cannot be known (or no input file is known at all). `full`: every file is read and checked
    against the whole output, so the served text is a function of the inputs alone, and a
    document already labeled from another input file is skipped (with `auto` it is labeled
    again and `condlabel status` counts a duplicate key). The ledger is a cache: `full`
    rebuilds it."""


# Labelers whose label costs more than the extra pass dedup takes (bench/README.md, dedup.py).
GENERATIVE_BACKENDS = ("hf", "vllm", "ct2")


class DedupConfig(StrictModel):
    enabled: bool | Literal["auto"] = "auto"
    """Label each distinct chunk text once per run: chunks whose normalised text (Unicode NFC,
    whitespace runs as one space; case and punctuation count) is the same as an earlier chunk's
    (input order) get its labels, scores and outputs, and `copied_from` names it. Costs one more
    read and chunking pass over the inputs before labeling (40 bytes per chunk on the driver).
    `auto`: on for the generative labelers (hf, vllm, ct2, and any cascade), whose labels cost
    more than that pass; off for `keyphrase` and `none`, where the pass costs more than it saves."""


class ComputeConfig(RayConnection):
    actors: int | None = Field(None, ge=1)
    """Labeler actors; unset sizes the pool from the cluster's resources, leaving room for readers."""
    min_actors: int | None = Field(None, ge=1)
    """Fewest labeler actors of an autoscaling pool (default 1); with `actors` unset, the pool
    starts at what fits the cluster, within min_actors..max_actors."""
    max_actors: int | None = Field(None, ge=1)
    """Most labeler actors of an autoscaling pool (Ray Data adds actors while chunks queue up;
    default: what fits the cluster when the run starts). Above what fits, the pending actors'
    resource requests make an autoscaling cluster add nodes, and the pool grows onto them."""
    num_cpus_per_actor: float = Field(1.0, gt=0)
    """CPUs reserved by each labeler actor."""
    num_gpus_per_actor: float = Field(0.0, ge=0)
    """GPUs reserved by each labeler actor (1 for the reference labeler on a GPU cluster)."""
    actor_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each labeler actor requests, e.g. `{gpu_80gb: 1}` so a 20B labeler
    only lands on nodes that declare that resource (see cluster.yaml)."""
    batch_size: int = Field(16, ge=1)
    """Chunks per labeler call."""
    num_cpus_per_reader: float = Field(0.5, gt=0)
    """CPUs reserved by each read+chunk task (fractional so readers are never starved)."""
    block_bytes: int = Field(4 * 2**20, ge=2**10)
    """Ray Data's block size for the run's graph. Labeled rows leave a labeler actor for the
    writer in blocks of about this many bytes, so a killed actor loses at most about one block
    of labeled work, and a read task's chunks are spread over the pool in blocks this size.
    Ray's own default (128 MiB) would hold a whole read task's labels in the actor until the
    last one is done. Smaller costs an object and an actor call per block."""
    max_labeler_error_share: float = Field(0.5, ge=0, le=1)
    """A chunk whose labeling raises is retried alone, then kept in `_rejects/` as
    `labeler_error` and the run goes on; the run fails (exit 1) when more than this share of
    its chunks (labeled, failed, or already in the output) failed so."""
    label_timeout_s: float | None = Field(900.0, gt=0)
    """Seconds one labeler call (a batch, or one chunk) may take. A call over it ends its actor
    (a running call cannot be interrupted); Ray restarts the actor, the batch's chunks are
    labeled one at a time, and a chunk that overruns alone goes to `_rejects/` as
    `labeler_timeout` (one that kills its actor alone: `labeler_crash`). These count as labeler
    errors. Model loading is not timed. `null`: no limit (crashes are still isolated)."""
    progress_interval_s: float = Field(15.0, gt=0)
    """Seconds between driver-side progress lines."""

    @model_validator(mode="after")
    def _pool_bounds(self) -> ComputeConfig:
        if self.actors is not None and (self.min_actors or self.max_actors):
            raise ValueError(
                "compute.actors: a fixed pool size; set either compute.actors or "
                "compute.min_actors/compute.max_actors (an autoscaling pool), not both"
            )
        if self.min_actors and self.max_actors and self.min_actors > self.max_actors:
            raise ValueError(
                f"compute.min_actors: {self.min_actors} is above compute.max_actors "
                f"({self.max_actors})"
            )
        return self


class ConvertConfig(RunConfig):
    """Configuration of a conversion run (`condlabel convert`)."""

    input: InputConfig = Field(default_factory=InputConfig)
    """Where the documents are, and which fields hold their text and id."""
    chunking: ChunkConfig = Field(default_factory=ChunkConfig)
    """How documents are cut into the chunks that get labeled."""
    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    """The backend that writes each chunk's synopsis and tags."""
    format: FormatConfig = Field(default_factory=FormatConfig)
    """The prefix put before each chunk's text."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    """Where the tagged shards go, and how a run holds the output."""
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    """The Ray cluster and the labeler actor pool."""
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    """Duplicate chunks: each distinct text is labeled once per run."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint, profile and credentials for every s3:// path."""
    classifiers: list[ClassifierConfig] = Field(default_factory=list)
    """Control-token classifiers run after the labeler (e.g. `[{backend: vader}]`)."""
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    """A teacher that relabels the chunks the labeler (a distilled student) is unsure of, on its
    own actor pool in the same run."""

    @property
    def dedup_enabled(self) -> bool:
        """`dedup.enabled`, with `auto` decided by the labeler backend."""
        if self.dedup.enabled != "auto":
            return bool(self.dedup.enabled)
        return self.cascade.enabled or self.labeler.backend in GENERATIVE_BACKENDS

    @model_validator(mode="after")
    def _template_metadata(self) -> ConvertConfig:
        # Training renders the prefix from the shards: a field the template shows must be kept.
        kept = self.input.kept_types
        fields = template_fields(self.format.prefix_template)
        missing = [n[len(META_FIELD) :] for n in fields if n.startswith(META_FIELD)]
        missing = [n for n in missing if n not in kept]
        if missing:
            raise ValueError(
                f"format.prefix_template: {{meta.NAME}} shows a kept input field; add {missing} "
                "to input.keep_fields"
            )
        if URL_DOMAIN_FIELD in fields and self.input.url_field not in kept:
            raise ValueError(
                f"format.prefix_template: {{url_domain}} is taken from input.url_field "
                f"({self.input.url_field!r}), which must be in input.keep_fields"
            )
        return self

    @model_validator(mode="after")
    def _vllm_gpus(self) -> ConvertConfig:
        # A vLLM engine shards its model over exactly the GPUs its actor reserved.
        if self.labeler.backend != "vllm":
            return self
        tp, gpus = self.labeler.vllm.tensor_parallel_size, self.compute.num_gpus_per_actor
        if gpus and gpus != tp:
            raise ValueError(
                f"compute.num_gpus_per_actor: must equal labeler.vllm.tensor_parallel_size ({tp}) "
                f"for backend `vllm` (got {gpus:g}): each actor's engine runs one tensor-parallel "
                "worker per GPU the actor reserved"
            )
        if tp > 1 and not gpus:
            raise ValueError(
                f"labeler.vllm.tensor_parallel_size: {tp} needs GPUs; set "
                f"compute.num_gpus_per_actor={tp}"
            )
        return self
