"""What a run cost: actor-seconds by resource, chunks and tokens (in each run's manifest), and
what `condlabel status` makes of them given prices (`--set cost.<resource>_hour_usd=X`).

Actor-seconds count the time each labeler actor held its resources: from its start (model
loading included) to the end of its last batch, times what it reserved (CPUs, GPUs of a type,
custom resources). Pure functions; the label stage reports to the run's counter actor.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConfigError, ConvertConfig

TOKEN_FIELDS = ("input_tokens", "generated_tokens", "input_words")
_COST_KEY = re.compile(r"cost\.(?P<resource>[A-Za-z0-9_:.\-]+)_hour_usd")


def actor_resources(cfg: ConvertConfig, gpu_type: str | None = None) -> dict[str, float]:
    """What one labeler actor reserves, by resource name (`GPU:<type>` when the type is known)."""
    c = cfg.compute
    held = {"CPU": c.num_cpus_per_actor}
    if c.num_gpus_per_actor:
        held[f"GPU:{gpu_type}" if gpu_type else "GPU"] = c.num_gpus_per_actor
    held.update(c.actor_resources)
    return held


def node_gpu_type() -> str | None:
    """The accelerator type Ray detected on this actor's node (`accelerator_type:A100` -> A100)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    for info in ray.nodes():
        if info.get("NodeID") == node:
            for name in info.get("Resources", {}):
                if name.startswith("accelerator_type:"):
                    return name.split(":", 1)[1]
    return None


class ActorClock:
    """Mixin for the run's counter actor: each labeler actor's time alive and reservation
    (no __init__ of its own, so it mixes into any counter)."""

    def actor_alive(
        self, actor: str, seconds: float, held: dict[str, float], busy: float = 0.0
    ) -> None:
        alive = self.__dict__.setdefault("alive", {})
        alive[actor] = (max(seconds, alive.get(actor, (0.0, {}))[0]), held)
        labeling = self.__dict__.setdefault("busy", {})
        labeling[actor] = max(busy, labeling.get(actor, 0.0))

    def actor_seconds(self) -> dict[str, float]:
        return resource_seconds(self.__dict__.get("alive", {}).values())

    def actor_busy(self) -> tuple[float, float]:
        """(seconds the labeler actors spent labeling, seconds they were alive), summed."""
        alive = sum(seconds for seconds, _ in self.__dict__.get("alive", {}).values())
        return sum(self.__dict__.get("busy", {}).values()), alive


class AliveReporter:
    """In a labeler actor: after each batch, tell the counter how long this actor has held
    its resources and how much of that it spent labeling (`busy`, from `labeling()`); fire and
    forget, no wait on the counter. Alive but not busy is loading, or waiting for chunks."""

    def __init__(self, cfg: ConvertConfig, counter: Any):
        self.cfg, self.counter = cfg, counter
        self.started = time.monotonic()
        self.key = uuid.uuid4().hex
        self.held: dict[str, float] | None = None
        self.busy = 0.0

    @contextmanager
    def labeling(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.busy += time.monotonic() - started

    def __call__(self) -> None:
        if self.held is None:
            gpu = node_gpu_type() if self.cfg.compute.num_gpus_per_actor else None
            self.held = actor_resources(self.cfg, gpu)
        alive = time.monotonic() - self.started
        self.counter.actor_alive.remote(self.key, alive, self.held, self.busy)


def resource_seconds(actors: Iterable[tuple[float, Mapping[str, float]]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for seconds, held in actors:
        for resource, amount in held.items():
            total[resource] = total.get(resource, 0.0) + seconds * amount
    return {k: round(v, 3) for k, v in sorted(total.items())}


def shard_tokens(batch: pa.Table | None) -> dict[str, list]:
    """The write step's token counts of a shard (one row of the shard list)."""
    if batch is None:
        return {name: [] for name in TOKEN_FIELDS}
    return {
        "input_tokens": [pc.sum(batch.column("input_tokens")).as_py() or 0],
        "generated_tokens": [pc.sum(batch.column("num_generated_tokens")).as_py() or 0],
        # Labelers without a tokenizer (keyphrase) report no input tokens; words stand in.
        "input_words": [pc.sum(batch.column("num_words")).as_py() or 0],
    }


def add_tokens(cost: dict[str, Any], shards: pa.Table) -> None:
    """Add landed shards' token counts to a run's cost record."""
    for name in TOKEN_FIELDS:
        if name in shards.column_names:
            cost[name] = cost.get(name, 0) + (pc.sum(shards.column(name)).as_py() or 0)


def parse_costs(overrides: list[str]) -> tuple[dict[str, float], list[str]]:
    """Split `cost.<resource>_hour_usd=X` settings from the other `--set` overrides; every bad
    one is named at once."""
    costs: dict[str, float] = {}
    rest, problems = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("cost."):
            rest.append(item)
            continue
        match = _COST_KEY.fullmatch(key)
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not match or price < 0:
            problems.append(
                f"{key}: expected cost.<resource>_hour_usd=<non-negative USD>, e.g. "
                f"cost.CPU_hour_usd=0.05 or cost.GPU:A100_hour_usd=2.5 (got {item!r})"
            )
            continue
        costs[match["resource"]] = price
    if problems:
        raise ConfigError(problems)
    return costs, rest


def cost_report(manifests: list[dict[str, Any]], prices: Mapping[str, float]) -> dict[str, Any]:
    """Totals over every run's cost record, and with prices: USD, and USD per million and per
    billion input tokens (resources without a price are listed, not guessed)."""
    seconds: Counter[str] = Counter()
    totals = {"chunks": 0, **dict.fromkeys(TOKEN_FIELDS, 0)}
    for m in manifests:
        cost = m.get("cost") or {}
        seconds.update(cost.get("actor_seconds") or {})
        for k in totals:
            totals[k] += int(cost.get(k) or 0)
    report: dict[str, Any] = {"actor_seconds": dict(seconds), **totals}
    if prices:
        usd = sum(s / 3600 * prices[r] for r, s in seconds.items() if r in prices)
        report["usd"] = round(usd, 4)
        report["unpriced"] = sorted(r for r in seconds if r not in prices)
        # Per input token where the labeler counted them, else per input word.
        unit = "tokens" if totals["input_tokens"] else "words"
        count = totals[f"input_{unit}"]
        per_unit = usd / count if count else None
        report["per_unit"] = unit
        report[f"usd_per_million_input_{unit}"] = per_unit and round(per_unit * 1e6, 6)
        report[f"usd_per_billion_input_{unit}"] = per_unit and round(per_unit * 1e9, 3)
    return report


def cost_lines(report: dict[str, Any]) -> list[str]:
    held = ", ".join(f"{r} {s / 3600:.3f} h" for r, s in report["actor_seconds"].items())
    lines = [
        f"cost: {report['chunks']} chunks, {report['input_tokens']} input tokens "
        f"({report['input_words']} words), {report['generated_tokens']} generated; "
        f"actors held {held or 'nothing'}"
    ]
    if "usd" in report:
        unit = report["per_unit"]
        per_m = report[f"usd_per_million_input_{unit}"]
        per_b = report[f"usd_per_billion_input_{unit}"]
        line = f"cost: ${report['usd']:.4f}"
        if per_m:
            line += f", ${per_m:.6f} per million and ${per_b:.3f} per billion input {unit}"
        if report["unpriced"]:
            line += f" (no price for {', '.join(report['unpriced'])})"
        lines.append(line)
    return lines


def counter_seconds(counter: Any) -> dict[str, float]:
    """The run's actor-seconds by resource, from its counter actor (on the driver)."""
    import ray

    return ray.get(counter.actor_seconds.remote())


def busy_share(counter: Any) -> float | None:
    """The share of the labeler actors' time spent labeling (None: no actor labeled)."""
    import ray

    busy, alive = ray.get(counter.actor_busy.remote())
    return round(busy / alive, 4) if alive > 0 else None
