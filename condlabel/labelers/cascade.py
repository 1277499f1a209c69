"""The cascade: a cheap student labels every chunk, and the chunks it is unsure of go to the
teacher. Unsure means its label did not parse, or its mean log-probability per generated token
(`mean_logprob`) is below the threshold; the distillation gate's calibration table
(`condlabel distill`) shows what each threshold routes and what the student's kept labels are
worth. The rule and the merge are here, free of Ray; `condlabel.convert.cascade` runs the
teacher on its own actor pool in the same Ray Data run, and `CascadeLabeler` runs both in one
process (benchmarks, a laptop).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from condlabel.labelers.base import Labeler, LabelResult

# Columns the classifiers fill, from the text alone: a routed chunk keeps the student row's.
KEPT_ON_ROUTING = ("control_tokens", "scores")


def needs_teacher(parse_ok: bool | None, mean_logprob: float | None, threshold: float) -> bool:
    """True when the student's label should be replaced by the teacher's."""
    return not parse_ok or mean_logprob is None or mean_logprob < threshold


def routed_mask(table: pa.Table, threshold: float) -> pa.Array:
    """`needs_teacher` for every row of a labeled table."""
    return pa.array(
        [
            needs_teacher(ok, lp, threshold)
            for ok, lp in zip(
                table.column("parse_ok").to_pylist(),
                table.column("mean_logprob").to_pylist(),
                strict=True,
            )
        ],
        pa.bool_(),
    )


def merge_relabeled(student: pa.Table, relabeled: pa.Table, routed: pa.Array) -> pa.Table:
    """The student's rows that were not routed, then the teacher's labels of the routed ones
    (with the student rows' `KEPT_ON_ROUTING` columns), in the student table's schema."""
    kept = student.filter(pc.invert(routed))
    original = student.filter(routed)
    columns = []
    for name in student.column_names:
        source = (
            original if name in KEPT_ON_ROUTING or name not in relabeled.column_names else relabeled
        )
        columns.append(source.column(name).cast(student.schema.field(name).type))
    return pa.concat_tables([kept, pa.Table.from_arrays(columns, schema=student.schema)])


class CascadeLabeler:
    """Student first, teacher for the chunks `needs_teacher` picks, in one process. Each result
    says who labeled it in `extra["labeled_by"]` (`student` or `teacher`)."""

    def __init__(self, student: Labeler, teacher: Labeler, threshold: float):
        self.student, self.teacher, self.threshold = student, teacher, threshold

    @property
    def fingerprint(self) -> str:
        return f"cascade({self.student.fingerprint}|{self.teacher.fingerprint}|{self.threshold:g})"

    def label(self, texts: list[str]) -> list[LabelResult]:
        results = self.student.label(texts)
        routed = [
            i
            for i, r in enumerate(results)
            if needs_teacher(r.parse_ok, r.mean_logprob, self.threshold)
        ]
        for r in results:
            r.extra["labeled_by"] = "student"
        if routed:
            for i, r in zip(routed, self.teacher.label([texts[i] for i in routed]), strict=True):
                r.extra["labeled_by"] = "teacher"
                results[i] = r
        return results


def routed_share(results: Sequence[LabelResult]) -> float:
    return (
        sum(r.extra.get("labeled_by") == "teacher" for r in results) / len(results)
        if results
        else 0.0
    )
