"""Ray stays at the edges: the core modules import without Ray, torch or transformers."""

from __future__ import annotations

from import_check import heavy_imports

CORE = [
    "condlabel",
    "condlabel.config",
    "condlabel.schema",
    "condlabel.convert.reading",
    "condlabel.convert.chunking",
    "condlabel.convert.stages",
    "condlabel.convert.format",
    "condlabel.prefix",
    "condlabel.runs.runstate",
    "condlabel.runs.summary",
    "condlabel.runs.progress",
    "condlabel.ray_runtime",
    "condlabel.labelers.prompts",
    "condlabel.storage",
    "condlabel.readback",
    "condlabel.labelers",
    "condlabel.labelers.keyphrase",
    "condlabel.cli",
    "condlabel.cli.corpus",
    "condlabel.cli.models",
    "condlabel.sentences",
    "condlabel.models",
    "condlabel.classifiers",
    "condlabel.preflight",
    "condlabel.failures",
    "condlabel.runs.lease",
    "condlabel.convert.inputs",
    "condlabel.convert.duplicates",
    "condlabel.s3",
    "condlabel.train.data",
    "condlabel.train.control_tokens",
    "condlabel.train.optim",
    "condlabel.train.evaluate",
]


def test_core_modules_do_not_import_ray_or_torch():
    assert heavy_imports(CORE, heavy=("ray", "torch", "transformers", "vllm")) == []
