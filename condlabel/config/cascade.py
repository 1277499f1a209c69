"""Settings of a cascade conversion (`cascade:` of `condlabel convert`): the configured labeler
(a distilled student) labels every chunk, the teacher relabels those it is unsure of, on its
own actor pool in the same run."""

from __future__ import annotations

from pydantic import Field

from condlabel.config.common import StrictModel
from condlabel.config.labelers import LabelerConfig


class TeacherComputeConfig(StrictModel):
    actors: int = Field(1, ge=1)
    """Teacher actors (each loads the teacher once)."""
    num_cpus_per_actor: float = Field(1.0, gt=0)
    """CPUs reserved by each teacher actor."""
    num_gpus_per_actor: float = Field(0.0, ge=0)
    """GPUs reserved by each teacher actor (the big GPUs, while the student's pool takes small
    ones or CPUs: `compute.num_gpus_per_actor`)."""
    actor_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each teacher actor requests, e.g. `{gpu_80gb: 1}`."""
    batch_size: int = Field(64, ge=1)
    """Student-labeled chunks handed to a teacher actor at a time; the routed ones among them
    are labeled in one call (so a larger batch feeds the teacher fuller calls)."""


class CascadeConfig(StrictModel):
    enabled: bool = False
    """Run the cascade: `labeler` is the student, `cascade.teacher` the teacher."""
    threshold: float = -1.0
    """Chunks whose student `mean_logprob` is below this (and those whose student label did not
    parse) are relabeled by the teacher; pick it from the calibration table of `condlabel
    distill`'s report. The `labeler` column says who labeled each row."""
    teacher: LabelerConfig = Field(default_factory=LabelerConfig)
    """The teacher labeler (any backend, e.g. hf with flan-ul2 + condlabeler-alpha)."""
    compute: TeacherComputeConfig = Field(default_factory=TeacherComputeConfig)
    """The teacher's actor pool."""
