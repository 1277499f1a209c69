"""A conversion on a three-node Ray cluster on this machine (Ray's own multi-node test utility:
one head and two worker nodes, each its own raylet), with labeler actors on the worker nodes;
one worker node is killed mid-run. The run completes by itself or fails with a clear last line;
after a rerun every chunk is present exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import expected_chunks, make_docs, write_jsonl
from pipeline_helpers import convert_args, output_rows, row_keys

from condlabel.ray_runtime import loopback_only

pytestmark = pytest.mark.slow

MAX_WORDS = 60
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # what `loopback_only` sets


@pytest.fixture()
def cluster():
    from ray.cluster_utils import Cluster

    # On 127.0.0.1 whatever ran before in this process: Ray gives new nodes the address of a
    # Ray this process has joined (the session's `ray_local`, on loopback), so without this the
    # cluster's address would depend on test order; the drivers join with the same switch
    # (LOOPBACK_ENV), or Ray turns 127.0.0.1 into the network address and never connects.
    with loopback_only():
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        # Labeler actors need a `labeler_slot`, which only the worker nodes have.
        workers = [c.add_node(num_cpus=1, resources={"labeler_slot": 1}) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, workers
    finally:
        c.shutdown()


def test_a_worker_node_lost_mid_run_then_rerun_exactly_once(cluster, tmp_path):
    c, workers = cluster
    docs = make_docs(120, "n")
    for i in range(4):
        write_jsonl(tmp_path / "in" / f"{i}.jsonl", docs[i::4])
    out = tmp_path / "out"
    args = [
        str(Path(sys.executable).parent / "condlabel"),
        *convert_args(
            [tmp_path / "in"],
            out,
            f"chunking.max_words={MAX_WORDS}",
            "output.rows_per_file=4",
            "compute.batch_size=2",
            "compute.actors=2",
            "compute.num_cpus_per_actor=0.5",
            "compute.actor_resources={labeler_slot: 1}",
            "labeler.keyphrase.max_ngram=5",
            "output.lease_ttl_s=5",
        ),
        "--json",
    ]
    env = {**os.environ, **LOOPBACK_ENV, "RAY_ADDRESS": c.address}
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.glob("part-*.parquet"))) >= 3:
            break
        time.sleep(0.2)
    if proc.poll() is not None or len(list(out.glob("part-*.parquet"))) < 3:
        proc.kill()
        pytest.fail(f"no node killed: the run wrote too little or ended: {finish(proc)[1][-3000:]}")
    c.remove_node(workers[0], allow_graceful=False)
    _, stderr = finish(proc)
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1]
        assert last and not last.startswith(("Traceback", "  File")), stderr[-3000:]

    with loopback_only():
        c.add_node(num_cpus=1, resources={"labeler_slot": 1})  # the autoscaler would replace it
    c.wait_for_nodes()
    rerun = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = finish(rerun)
    assert rerun.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    n = expected_chunks(docs, MAX_WORDS)
    assert summary["rows_written"] + summary["skipped_done"] == summary["chunks"] == n
    table = output_rows(out, columns=["doc_id", "chunk_index"])
    assert table.num_rows == n and len(set(row_keys(table))) == n


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    """(stdout, stderr) of a run once it ends; a run still going after `timeout` is killed and the
    test fails with what it printed (a hang shows where it was)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"the run did not end within {timeout:g}s; its stderr:\n{stderr[-3000:]}")
    return stdout, stderr
