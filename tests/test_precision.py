"""Precision rules stated in code: float16 is refused for T5-family models wherever it can be
chosen (`merge --dtype`, `merge --quantization`, `labeler.ct2.compute_type`), naming the
setting; their activations overflow float16."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from condlabel.cli import main
from condlabel.config import ConfigError


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--dtype", "float16"], "--dtype: float16"),
        (["--format", "ct2", "--quantization", "float16"], "--quantization: float16"),
        (["--format", "ct2", "--quantization", "int8_float16"], "--quantization: int8_float16"),
    ],
)
def test_merge_refuses_float16_for_a_t5(flags, named, tiny_t5, tiny_t5_adapter, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["merge", "--base", str(tiny_t5), "--adapter", str(tiny_t5_adapter)]
    assert main([*args, "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "T5-family" in err and "overflow float16" in err
    assert not out.exists()


def test_merge_keeps_float16_for_other_models(tiny_llama, tiny_llama_adapter, tmp_path):
    out = tmp_path / "out"
    args = ["merge", "--base", str(tiny_llama), "--adapter", str(tiny_llama_adapter)]
    assert main([*args, "--output", str(out), "--dtype", "float16"]) == 0


def test_ct2_labeler_refuses_float16_compute_for_a_t5(tiny_t5, tmp_path):
    pytest.importorskip("ctranslate2")
    from condlabel.config.labelers import CT2LabelerConfig
    from condlabel.labelers.ct2 import CT2Labeler
    from condlabel.models import merge_model

    model = merge_model(
        str(tiny_t5), None, str(tmp_path / "ct2"), format="ct2", quantization="int8"
    )
    for compute_type in ("float16", "int8_float16"):
        cfg = CT2LabelerConfig(model=model, compute_type=compute_type, device="cpu")
        with pytest.raises(
            ConfigError, match=rf"labeler\.ct2\.compute_type: {compute_type} is refused"
        ):
            CT2Labeler(cfg)
    # a model converted elsewhere (no record of its family) is recognised as T5 all the same
    (tmp_path / "ct2" / "condlabel_merge.json").unlink()
    with pytest.raises(ConfigError, match="T5-family"):
        CT2Labeler(CT2LabelerConfig(model=model, compute_type="float16", device="cpu"))
