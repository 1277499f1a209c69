"""An actor that reserved a GPU must see a CUDA device when its labeler would use one
(`condlabel.gpus`); the whole path on a Ray head with declared GPUs is in
tests/test_gpu_scheduling.py (slow)."""

from __future__ import annotations

import pytest

from condlabel.config import ConfigError, HFLabelerConfig
from condlabel.config.labelers import CT2LabelerConfig, KeyphraseLabelerConfig
from condlabel.gpus import check_reserved_gpus

KEY = "compute.num_gpus_per_actor"


def test_a_reserved_gpu_that_is_not_there_fails_naming_the_key(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    for cfg in (HFLabelerConfig(model="m"), CT2LabelerConfig(model="m", device="cuda")):
        with pytest.raises(ConfigError, match=rf"{KEY}: this actor reserved GPU 2 .*sees no CUDA"):
            check_reserved_gpus(["2"], KEY, cfg, count=0)


def test_nothing_to_check_without_a_reservation_a_device_or_a_missing_gpu():
    check_reserved_gpus([], KEY, HFLabelerConfig(model="m"), count=0)  # nothing reserved
    check_reserved_gpus(["0"], KEY, HFLabelerConfig(model="m", device="cpu"), count=0)
    check_reserved_gpus(["0"], KEY, KeyphraseLabelerConfig(), count=0)  # the CPU labeler
    check_reserved_gpus(["0"], KEY, HFLabelerConfig(model="m"), count=1)  # it is there


def test_a_gpu_pool_starts_at_the_gpus_it_fits_within_min_and_max_actors():
    from condlabel.config import load_convert_config
    from condlabel.convert.pipeline import pool_bounds, pool_size

    def compute(*overrides: str):
        return load_convert_config(overrides=list(overrides))

    four_gpus, one = {"CPU": 6.0, "GPU": 4.0}, "compute.num_gpus_per_actor=1"
    assert pool_size(compute(one), four_gpus) == 4
    assert pool_size(compute(one, "compute.num_cpus_per_actor=0.1"), four_gpus) == 4  # GPUs bound
    assert pool_size(compute("compute.num_gpus_per_actor=0.5"), four_gpus) == 8
    assert pool_size(compute(one, "compute.max_actors=2"), four_gpus) == 2
    assert pool_size(compute(one, "compute.min_actors=2", "compute.max_actors=3"), four_gpus) == 3
    bounds = pool_bounds(compute(one, "compute.max_actors=2"), 2)
    assert bounds == {"min_size": 1, "max_size": 2, "initial_size": 2}
