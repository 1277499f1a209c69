"""The cost record of each run (actor-seconds by resource, chunks, tokens) and what
`condlabel status` makes of it with prices."""

from __future__ import annotations

import json

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_config

from condlabel.cli import main
from condlabel.config import ConfigError, load_convert_config
from condlabel.convert.pipeline import run_conversion
from condlabel.runs.costs import (
    ActorClock,
    actor_resources,
    cost_report,
    parse_costs,
    resource_seconds,
)
from condlabel.runs.runstate import read_manifests


def test_prices_are_parsed_from_set_and_bad_ones_named():
    prices, rest = parse_costs(
        ["cost.CPU_hour_usd=0.05", "storage.region=x", "cost.GPU:A100_hour_usd=2.5"]
    )
    assert prices == {"CPU": 0.05, "GPU:A100": 2.5} and rest == ["storage.region=x"]
    with pytest.raises(ConfigError) as err:
        parse_costs(["cost.CPU_hour=1", "cost.GPU_hour_usd=-2"])
    assert "cost.CPU_hour" in str(err.value) and "cost.GPU_hour_usd" in str(err.value)


def test_busy_share_counts_each_actors_latest_report():
    clock = ActorClock()
    assert clock.actor_busy() == (0.0, 0.0)
    clock.actor_alive("a", 10.0, {"CPU": 1.0}, busy=4.0)
    clock.actor_alive("a", 20.0, {"CPU": 1.0}, busy=15.0)  # a later report replaces it
    clock.actor_alive("a", 18.0, {"CPU": 1.0}, busy=14.0)  # arrived late: kept the latest
    clock.actor_alive("b", 10.0, {"CPU": 1.0}, busy=1.0)
    assert clock.actor_busy() == (16.0, 30.0)
    assert clock.actor_seconds() == {"CPU": 30.0}


def test_actor_seconds_by_resource_and_gpu_type():
    cfg = load_convert_config(
        overrides=[
            "compute.num_cpus_per_actor=2",
            "compute.num_gpus_per_actor=1",
            "compute.actor_resources={gpu_80gb: 1}",
        ]
    )
    held = actor_resources(cfg, "A100")
    assert held == {"CPU": 2.0, "GPU:A100": 1.0, "gpu_80gb": 1.0}
    assert resource_seconds([(10.0, held), (5.0, {"CPU": 1.0})]) == {
        "CPU": 25.0,
        "GPU:A100": 10.0,
        "gpu_80gb": 10.0,
    }


def test_cost_per_million_and_billion_input_tokens():
    runs = [
        {
            "cost": {
                "actor_seconds": {"GPU:A100": 3600.0, "CPU": 7200.0},
                "chunks": 10,
                "input_tokens": 2_000_000,
                "generated_tokens": 800,
                "input_words": 1,
            }
        },
        {
            "cost": {
                "actor_seconds": {"GPU:A100": 3600.0},
                "chunks": 5,
                "input_tokens": 2_000_000,
                "generated_tokens": 400,
                "input_words": 1,
            }
        },
        {"status": "failed"},  # a manifest from before cost records
    ]
    report = cost_report(runs, {"GPU:A100": 2.0})
    assert report["chunks"] == 15 and report["input_tokens"] == 4_000_000
    assert report["usd"] == 4.0 and report["unpriced"] == ["CPU"]
    assert report["usd_per_million_input_tokens"] == 1.0
    assert report["usd_per_billion_input_tokens"] == 1000.0
    assert "usd" not in cost_report(runs, {})


@pytest.mark.usefixtures("ray_local")
def test_run_records_cost_and_status_prices_it(tmp_path, capsys):
    docs = make_docs(4, "c")
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    out = tmp_path / "out"
    summary = run_conversion(convert_config([src], out, "chunking.max_words=60"))
    [manifest] = read_manifests(str(out), load_convert_config().storage)
    cost = manifest["cost"]
    assert cost["chunks"] == summary.rows_written > 0
    assert cost["actor_seconds"]["CPU"] > 0
    assert cost["input_words"] == sum(len(d["text"].split()) for d in docs)
    # The labelers' busy share: labeling time over time alive (start-up included), so below 1.
    busy = manifest["timings"]["labeler_busy_share"]
    assert busy == summary.labeler_busy_share and 0 < busy < 1
    assert f"labelers busy {busy:.0%}" in "\n".join(summary.lines())

    capsys.readouterr()
    assert main(["status", str(out), "--json", "--set", "cost.CPU_hour_usd=0.1"]) == 0
    status = json.loads(capsys.readouterr().out)["cost"]
    assert status["usd"] == pytest.approx(cost["actor_seconds"]["CPU"] / 3600 * 0.1, abs=1e-4)
    assert status["per_unit"] == "words" and status["usd_per_million_input_words"] > 0
    assert main(["status", str(out), "--set", "cost.CPU_hour_usd=0.1"]) == 0
    assert "per billion input words" in capsys.readouterr().out
