"""The cascade's place in the conversion graph (`cascade.enabled`): after the student's label
stage, a second actor pool with the teacher's own resources relabels the chunks the student is
unsure of (`condlabel.labelers.cascade.needs_teacher`), in the same Ray Data run.

    chunks ──student pool (every chunk)──► labeled ──teacher pool (routed rows only)──► write

A teacher actor receives `cascade.compute.batch_size` student-labeled rows at a time, passes
the others through and labels the routed ones in one call; their `labeler` column then holds
the teacher's fingerprint (plus the classifiers'), and the bookkeeping column `_routed` (not
written) lets the write step count them for the run summary and manifest. A routed chunk the
teacher fails on keeps the student's label (its failure is logged, the chunk is not lost).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.stages import READ_SCHEMA, Stage, label_or_reject
from condlabel.labelers import Labeler, build_labeler, labeler_fingerprint
from condlabel.labelers.cascade import merge_relabeled, routed_mask

if TYPE_CHECKING:
    pass

log = logging.getLogger("condlabel")

ROUTED = "_routed"
"""Bookkeeping column: the row was relabeled by the teacher. Dropped before the shard is written."""


def teacher_fingerprint(cfg: ConvertConfig) -> str:
    """What the `labeler` column of a teacher-labeled row records: teacher plus classifiers."""
    from condlabel.classifiers import classifier_fingerprints

    return "+".join(
        [labeler_fingerprint(cfg.cascade.teacher), *classifier_fingerprints(cfg.classifiers)]
    )


def cascade_labelers(cfg: ConvertConfig, existing: dict[str, int]) -> dict[str, int]:
    """The output's labelers less the teacher's rows of a cascade (they belong to this run's
    labeling too), for the fingerprint guard."""
    if not cfg.cascade.enabled:
        return existing
    teacher = teacher_fingerprint(cfg)
    return {fp: n for fp, n in existing.items() if fp != teacher}


def teacher_stages(cfg: ConvertConfig) -> list[Stage]:
    """The teacher's stage when the cascade is on (it relabels routed rows: adds no column)."""
    import ray.data

    if not cfg.cascade.enabled:
        return []
    c = cfg.cascade.compute
    placement = {
        "fn_constructor_args": (cfg,),
        "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=c.actors, initial_size=c.actors),
        "num_cpus": c.num_cpus_per_actor,
        "num_gpus": c.num_gpus_per_actor or None,
        "resources": c.actor_resources or None,
    }
    return [Stage("teacher", TeacherStage, (), c.batch_size, placement)]


def routed_rows(batch: pa.Table) -> int:
    """Rows of a labeled batch the teacher relabeled (0 without a cascade)."""
    if ROUTED not in batch.column_names:
        return 0
    return int(pc.sum(batch.column(ROUTED)).as_py() or 0)


class TeacherStage:
    """Stateful per-actor UDF: the teacher is built on the first batch that routes a chunk, so
    a run whose student is sure of everything never loads it."""

    def __init__(self, cfg: ConvertConfig):
        self.cfg = cfg
        self.fingerprint = teacher_fingerprint(cfg)
        self.labeler: Labeler | None = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        routed = routed_mask(batch, self.cfg.cascade.threshold)
        if not pc.any(routed).as_py():
            return batch.append_column(ROUTED, routed)
        if self.labeler is None:
            import ray

            from condlabel.gpus import check_reserved_gpus

            teacher = self.cfg.cascade.teacher
            backend_cfg = getattr(teacher, teacher.backend, None)
            check_reserved_gpus(ray.get_gpu_ids(), "cascade.num_gpus_per_actor", backend_cfg)
            self.labeler = build_labeler(teacher, self.cfg.storage)
        chunks = batch.filter(routed).select(READ_SCHEMA.names)
        relabeled, rejects = label_or_reject(self.labeler, chunks, self.fingerprint)
        if rejects:
            log.warning(
                "the teacher failed on %d routed chunk(s); they keep the student's label. "
                "First: %s",
                len(rejects),
                rejects[0].detail,
            )
            routed = _relabeled_only(batch, routed, relabeled)
        merged = merge_relabeled(batch, relabeled, routed)
        kept = merged.num_rows - relabeled.num_rows
        flags = [False] * kept + [True] * relabeled.num_rows
        return merged.append_column(ROUTED, pa.array(flags, pa.bool_()))


def _relabeled_only(batch: pa.Table, routed: pa.Array, relabeled: pa.Table) -> pa.Array:
    """`routed` less the chunks the teacher failed on (absent from `relabeled`, whose rows keep
    the routed rows' order)."""
    done = set(
        zip(
            relabeled.column("doc_id").to_pylist(),
            relabeled.column("chunk_index").to_pylist(),
            strict=True,
        )
    )
    keys = zip(
        batch.column("doc_id").to_pylist(), batch.column("chunk_index").to_pylist(), strict=True
    )
    return pa.array(
        [r and key in done for r, key in zip(routed.to_pylist(), keys, strict=True)], pa.bool_()
    )
