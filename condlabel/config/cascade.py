"""Settings of a cascade conversion (`cascade:` of `condlabel convert`): the configured labeler
(a distilled student) labels every chunk, the teacher relabels those it is unsure of, on its
own actor pool in the same run."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, model_validator

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
    """Run the cascade: `labeler` is the student, the labeler of `cascade.teacher_config` the
    teacher."""
    threshold: float = -1.0
    """Chunks whose student `mean_logprob` is below this (and those whose student label did not
    parse) are relabeled by the teacher; pick it from the calibration table of `condlabel
    distill`'s report. The `labeler` column says who labeled each row."""
    teacher_config: str | None = None
    """The teacher: a labeler config file (YAML holding what a `labeler:` section holds, at its
    top level: backend, model, generation, hf, ...; any backend, e.g. hf with flan-ul2 +
    condlabeler-alpha). A relative path is looked up beside the config file that names it, then
    in the working directory. Read once, when the config loads. Required with `enabled`."""
    compute: TeacherComputeConfig = Field(default_factory=TeacherComputeConfig)
    """The teacher's actor pool."""

    _teacher: LabelerConfig | None = PrivateAttr(None)

    @property
    def teacher(self) -> LabelerConfig:
        """The teacher's labeler config, read from `teacher_config` by the config loader."""
        if self._teacher is None:
            raise ValueError(
                "cascade.teacher_config: not loaded; load the config with "
                "condlabel.config.load_convert_config (or load_config)"
            )
        return self._teacher

    def attach_teacher(self, teacher: LabelerConfig) -> None:
        self._teacher = teacher

    @model_validator(mode="after")
    def _needs_teacher(self) -> CascadeConfig:
        if self.enabled and not self.teacher_config:
            raise ValueError(
                "teacher_config: required with cascade.enabled (a labeler config file for the "
                "teacher)"
            )
        return self
