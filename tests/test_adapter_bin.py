"""Adapters published as `adapter_model.bin` (as the reference adapter was): read with torch's
restricted unpickler, converted once to safetensors, merged by `condlabel merge`; a pickle that
holds anything but tensors is refused before it can run."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_models import build_lora_adapter_bin, sample_texts  # noqa: E402

from condlabel.adapter_bin import (  # noqa: E402
    ADAPTER_PICKLED,
    ADAPTER_WEIGHTS,
    AdapterWeightsError,
)
from condlabel.cli import main  # noqa: E402
from condlabel.config import HFLabelerConfig  # noqa: E402
from condlabel.labelers.hf import HFLabeler  # noqa: E402
from condlabel.models import fetch_adapter, merge_model  # noqa: E402
from condlabel.preflight import Weights, weights_problems  # noqa: E402


@pytest.fixture(scope="module")
def tiny_t5_adapter_bin(tiny_t5, tmp_path_factory) -> Path:
    """`tiny_t5_adapter`'s weights saved as adapter_model.bin (a torch pickle), as peft once did."""
    return build_lora_adapter_bin(tiny_t5, tmp_path_factory.mktemp("adapter-bin") / "adapter")


class _RunsCode:
    """Unpickling this runs `os.system(command)`: what a hostile checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _hostile_adapter(directory: Path, real_adapter: Path, write) -> Path:
    """A copy of a real adapter whose adapter_model.bin is written by `write(path)`."""
    directory.mkdir()
    shutil.copy(real_adapter / "adapter_config.json", directory)
    write(directory / ADAPTER_PICKLED)
    return directory


def test_bin_adapter_labels_as_its_safetensors_twin(tiny_t5, tiny_t5_adapter, tiny_t5_adapter_bin):
    assert not (tiny_t5_adapter_bin / ADAPTER_WEIGHTS).exists()  # really the old format
    texts = sample_texts(4, max_words=80, seed=3)
    options = {"model": str(tiny_t5), "do_sample": False, "max_new_tokens": 12}
    from_bin = HFLabeler(HFLabelerConfig(adapter=str(tiny_t5_adapter_bin), **options))
    from_st = HFLabeler(HFLabelerConfig(adapter=str(tiny_t5_adapter), **options))
    base = HFLabeler(HFLabelerConfig(**options)).label(texts)
    for a, b, c in zip(from_bin.label(texts), from_st.label(texts), base, strict=True):
        assert a.raw_output == b.raw_output and a.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert a.logprob != pytest.approx(c.logprob, abs=1e-3)  # the adapter took effect


def test_conversion_happens_once_into_the_cache(tiny_t5_adapter_bin, tmp_path):
    before = sorted(p.name for p in tiny_t5_adapter_bin.iterdir())
    first = fetch_adapter(str(tiny_t5_adapter_bin), cache_dir=tmp_path)
    stamp = Path(first, ADAPTER_WEIGHTS).stat().st_mtime_ns
    assert fetch_adapter(str(tiny_t5_adapter_bin), cache_dir=tmp_path) == first
    assert Path(first, ADAPTER_WEIGHTS).stat().st_mtime_ns == stamp  # reused, not rewritten
    assert Path(first).is_relative_to(tmp_path)
    assert (Path(first) / "adapter_config.json").exists()
    assert not (Path(first) / ADAPTER_PICKLED).exists()
    assert sorted(p.name for p in tiny_t5_adapter_bin.iterdir()) == before  # source untouched


@pytest.mark.parametrize("fmt", ["torch_zip", "plain_pickle"])
def test_a_pickle_that_runs_code_is_refused(fmt, tiny_t5_adapter, tmp_path):
    marker = tmp_path / "pwned"
    payload = {"base_model.model.lm_head.weight": _RunsCode(f"touch {marker}")}

    def write(path):
        if fmt == "torch_zip":
            torch.save(payload, path)
        else:
            path.write_bytes(pickle.dumps(payload, protocol=2))  # torch.save's own protocol

    adapter = _hostile_adapter(tmp_path / "adapter", tiny_t5_adapter, write)
    with pytest.raises(AdapterWeightsError, match=r"adapter_model\.bin refused.*system") as info:
        fetch_adapter(str(adapter), cache_dir=tmp_path / "cache")
    assert not marker.exists()
    assert "weights_only` set to `False`" not in str(info.value)  # torch's advice is dropped
    assert not list((tmp_path / "cache" / "converted").glob("[!.]*"))  # nothing converted


def test_a_pickled_class_is_refused_without_torchs_advice(tiny_t5_adapter, tmp_path):
    """A class torch does not allow: its message offers re-running with weights_only=False
    and allowlisting the class; neither may reach the user, not even in the traceback."""
    import argparse
    import traceback

    def write(path):
        torch.save({"base_model.model.lm_head.weight": argparse.Namespace(x=1)}, path)

    adapter = _hostile_adapter(tmp_path / "adapter", tiny_t5_adapter, write)
    with pytest.raises(AdapterWeightsError, match=r"refused.*argparse\.Namespace") as info:
        fetch_adapter(str(adapter), cache_dir=tmp_path / "cache")
    shown = "".join(traceback.format_exception(info.value))
    for advice in ("weights_only", "Re-running", "add_safe_globals", "trusted source"):
        assert advice not in shown


def test_objects_other_than_named_tensors_are_refused(tiny_t5_adapter, tmp_path):
    def write(path):
        torch.save([torch.zeros(2)], path)  # loads under weights_only, but is no state dict

    adapter = _hostile_adapter(tmp_path / "adapter", tiny_t5_adapter, write)
    with pytest.raises(AdapterWeightsError, match="not a mapping of parameter names to tensors"):
        fetch_adapter(str(adapter), cache_dir=tmp_path / "cache")


def test_preflight_accepts_a_bin_adapter(tiny_t5_adapter_bin):
    assert weights_problems(Weights("labeler.hf.adapter", str(tiny_t5_adapter_bin), True)) == []


def test_merge_command_takes_a_bin_adapter(
    tiny_t5, tiny_t5_adapter, tiny_t5_adapter_bin, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "merged-bin"
    args = ["merge", "--base", str(tiny_t5), "--adapter", str(tiny_t5_adapter_bin)]
    assert main([*args, "--output", str(out)]) == 0
    reference = merge_model(str(tiny_t5), str(tiny_t5_adapter), str(tmp_path / "merged-st"))
    assert not list(out.glob("*.bin"))
    merged = load_file(out / "model.safetensors")
    expected = load_file(Path(reference) / "model.safetensors")
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6)


def test_a_changed_adapter_config_is_another_adapter(tiny_t5, tiny_t5_adapter_bin, tmp_path):
    """The cache is keyed by every file that defines the adapter: the same .bin weights with
    lora_alpha 16 -> 160 must merge with 160, not with the config converted first."""
    import json

    from safetensors.torch import load_file

    cache = tmp_path / "cache"
    scaled = tmp_path / "adapter-alpha160"
    shutil.copytree(tiny_t5_adapter_bin, scaled)
    settings = json.loads((scaled / "adapter_config.json").read_text())
    assert settings["lora_alpha"] == 16
    settings["lora_alpha"] = 160
    (scaled / "adapter_config.json").write_text(json.dumps(settings))
    first = fetch_adapter(str(tiny_t5_adapter_bin), cache_dir=cache)
    second = fetch_adapter(str(scaled), cache_dir=cache)
    assert first != second
    assert json.loads(Path(second, "adapter_config.json").read_text())["lora_alpha"] == 160
    merged = {}
    for name, adapter in (("alpha16", tiny_t5_adapter_bin), ("alpha160", scaled)):
        out = merge_model(str(tiny_t5), str(adapter), str(tmp_path / name), cache_dir=cache)
        merged[name] = load_file(Path(out) / "model.safetensors")
    changed = [
        k for k in merged["alpha16"] if not torch.equal(merged["alpha16"][k], merged["alpha160"][k])
    ]
    assert changed  # the larger scale reached the merged weights
