"""Scaling out a run: the labeler pool's bounds (compute.min_actors/max_actors, Ray Data's
autoscaling actor pool) and a run on such a pool."""

from __future__ import annotations

import pytest
from helpers import expected_chunks, make_docs, write_jsonl
from pipeline_helpers import convert_config

from condlabel.config import ConfigError, load_convert_config
from condlabel.convert.pipeline import pool_bounds, pool_size, run_conversion

CPUS = {"CPU": 8.0}  # 7 actors of 1 CPU fit beside a reader (0.5) and a writer (0.25)


def compute(*overrides: str):
    return load_convert_config(overrides=list(overrides))


def test_pool_starts_at_what_fits_within_the_bounds():
    assert pool_size(compute(), CPUS) == 7
    assert pool_size(compute("compute.max_actors=4"), CPUS) == 4
    assert pool_size(compute("compute.min_actors=9"), CPUS) == 9  # pending until nodes join
    assert pool_size(compute("compute.min_actors=2", "compute.max_actors=20"), CPUS) == 7
    assert pool_size(compute("compute.actors=3"), CPUS) == 3


def test_pool_bounds_map_to_ray_data_autoscaling_pool():
    assert pool_bounds(compute(), 7) == {"min_size": 1, "max_size": 7, "initial_size": 7}
    cfg = compute("compute.min_actors=2", "compute.max_actors=20")
    assert pool_bounds(cfg, 7) == {"min_size": 2, "max_size": 20, "initial_size": 7}
    assert pool_bounds(compute("compute.actors=3"), 3) == {
        "min_size": 1,
        "max_size": 3,
        "initial_size": 3,
    }


def test_bad_bounds_fail_naming_the_keys():
    with pytest.raises(ConfigError, match=r"compute\.min_actors.*compute\.max_actors"):
        compute("compute.min_actors=5", "compute.max_actors=2")
    with pytest.raises(ConfigError, match=r"compute\.actors"):
        compute("compute.actors=2", "compute.max_actors=4")


@pytest.mark.usefixtures("ray_local")
def test_a_run_on_an_autoscaling_pool(tmp_path):
    docs = make_docs(6, "p")
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    cfg = convert_config(
        [src],
        tmp_path / "out",
        "chunking.max_words=60",
        "compute.min_actors=1",
        "compute.max_actors=2",
        "compute.batch_size=2",
    )
    summary = run_conversion(cfg)
    assert summary.status == "succeeded" and summary.labeler_actors == 2
    assert summary.rows_written == expected_chunks(docs, 60)


def test_gpu_pool_starts_at_what_the_gpus_hold_within_the_bounds():
    gpus = {"CPU": 8.0, "GPU": 4.0}
    one, half = "compute.num_gpus_per_actor=1", "compute.num_gpus_per_actor=0.5"
    assert pool_size(compute(one), gpus) == 4
    assert pool_size(compute(half), gpus) == 8
    assert pool_size(compute(one, "compute.max_actors=2"), gpus) == 2
    assert pool_size(compute(one, "compute.min_actors=2", "compute.max_actors=20"), gpus) == 4
    assert pool_size(compute(one, "compute.min_actors=6"), gpus) == 6  # pending until GPUs join
    assert pool_size(compute(one), {"CPU": 8.0}) == 1  # none yet: one, for an autoscaler
