"""`storage:` reaches every component that fetches a model: the generative labelers (`hf`,
`vllm`) and the `hf` classifier load an s3:// model whose endpoint and keys are given only in
the run's storage settings. The real check runs in a subprocess whose environment holds no
AWS endpoint or keys (the test session exports them for everything else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from labeler_checks import upload_dir
from lm_fixtures import tiny_toxicity_dir  # noqa: F401  (a fixture)

from condlabel.config import LabelerConfig, StorageConfig
from condlabel.labelers import BACKENDS, Backend, LabelResult, build_labeler

STORAGE = StorageConfig(endpoint_url="http://127.0.0.1:1", access_key_id="k", secret_access_key="s")

# Loads an s3:// labeler and classifier with storage given in config only; prints what they give.
_LOAD_FROM_CONFIGURED_STORAGE = """
import json, sys
from condlabel.classifiers import build_classifiers
from condlabel.config import ClassifierConfig, LabelerConfig, StorageConfig
from condlabel.labelers import build_labeler

endpoint, bucket, cache, text = sys.argv[1:]
storage = StorageConfig(
    endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing-secret"
)
labeler = build_labeler(
    LabelerConfig(
        backend="hf",
        model=f"s3://{bucket}/models/t5",
        cache_dir=cache,
        generation={"max_new_tokens": 6},
    ),
    storage,
)
(classifier,) = build_classifiers(
    [ClassifierConfig(backend="hf", hf={"model": f"s3://{bucket}/models/tox"})], storage
)
print(json.dumps({
    "raw_output": labeler.label([text])[0].raw_output,
    "scores": classifier.classify([text])[0].scores,
}))
"""


def _without_aws(tmp_path: Path) -> dict[str, str]:
    """This environment minus every AWS variable; no shared AWS config or credentials files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-files")
    env["CONDLABEL_CACHE"] = str(tmp_path / "classifier-cache")
    return env


@pytest.mark.s3
def test_s3_models_load_with_storage_given_only_in_config(
    tiny_t5, request, s3_server, s3_bucket, s3fs_client, tmp_path
):
    from condlabel.classifiers import HFSequenceClassifier
    from condlabel.config import HFClassifierConfig, HFLabelerConfig
    from condlabel.labelers.hf import HFLabeler

    toxicity = request.getfixturevalue("tiny_toxicity_dir")
    upload_dir(s3fs_client, tiny_t5, f"{s3_bucket}/models/t5")
    upload_dir(s3fs_client, toxicity, f"{s3_bucket}/models/tox")
    text = "Storage settings reach the labeler actors through the run's config."
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_FROM_CONFIGURED_STORAGE, s3_server, s3_bucket]
        + [str(tmp_path / "cache"), text],
        env=_without_aws(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # What the same models give from their local directories.
    local = HFLabeler(HFLabelerConfig(model=str(tiny_t5), max_new_tokens=6)).label([text])[0]
    scores = HFSequenceClassifier(HFClassifierConfig(model=str(toxicity))).classify([text])
    assert got["raw_output"] == local.raw_output
    assert got["scores"] == pytest.approx(scores[0].scores, abs=1e-6)


@pytest.mark.parametrize(("backend", "cls"), [("hf", "HFLabeler"), ("vllm", "VLLMLabeler")])
def test_build_labeler_passes_storage_to_model_backends(backend, cls, monkeypatch):
    import importlib

    module = importlib.import_module(f"condlabel.labelers.{backend}")
    seen = []
    monkeypatch.setattr(module, cls, lambda cfg, storage=None: seen.append((cfg, storage)))
    cfg = LabelerConfig(backend=backend, model="m")
    build_labeler(cfg, STORAGE)
    build_labeler(cfg)
    assert seen == [(cfg.backend_config(), STORAGE), (cfg.backend_config(), None)]


def test_a_backend_built_from_config_alone_still_registers(monkeypatch):
    """A plugin backend that fetches nothing keeps its one-argument `build`."""

    class Fixed:
        fingerprint = "fixed"

        def __init__(self, cfg):
            self.cfg = cfg

        def label(self, texts):
            return [LabelResult("s", [], "", True) for _ in texts]

    monkeypatch.setitem(BACKENDS, "fixed", lambda: Backend(Fixed, lambda c: Fixed.fingerprint))
    cfg = LabelerConfig.model_construct(**{**dict(LabelerConfig()), "backend": "fixed"})
    assert isinstance(build_labeler(cfg, STORAGE), Fixed)
