"""A conversion driver for tests/test_gpu_scheduling.py, run as its own process against a Ray
head that declares GPUs it does not have (`ray start --num-gpus 4`):

    python tests/gpu_probe.py ADDRESS RECORDS_DIR INPUT OUTPUT OVERRIDE...

`probe` is a labeler backend (the keyphrase labeler, registered the way the real backends are,
in every worker through Ray's setup hook). Every labeler actor writes what it was given, its
process id, `ray.get_gpu_ids()` and CUDA_VISIBLE_DEVICES, as it starts: the actor's stage asks
for the backend's fingerprint in its constructor, before any batch. A record per actor *started*,
not per actor that got a batch: Ray Data hands blocks to the actors that are ready first, and
an autoscaling pool (min 1) lets idle ones go, so on a small input only some actors ever label
(2 of 4 did when the records were written on the first batch).

Two things would make the count of actors started differ from the pool's size, and the driver
rules both out: Ray Data's autoscaler lets an actor go when the pool's utilisation is low and
starts another when it rises (a small bursty input churned a pool bounded at 2 through 3
actors), so the utilisation-based downscale is off in these runs; and when the input runs dry
before every actor has started, the pool is shrunk with actors still pending, so the first batch
of each actor waits until CONDLABEL_GPU_PROBE_ACTORS actors have recorded (or two minutes).
Prints the run's exit code and summary as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from condlabel.labelers import BACKENDS, Backend, LabelResult, keyphrase

RECORDS = "CONDLABEL_GPU_PROBE_DIR"
EXPECTED = "CONDLABEL_GPU_PROBE_ACTORS"
WAIT_S = 120.0


class ProbeLabeler:
    def __init__(self, cfg) -> None:
        self.inner = keyphrase.KeyphraseLabeler(cfg.keyphrase)
        self.fingerprint = fingerprint(cfg)
        self.waited = False

    def label(self, texts: list[str]) -> list[LabelResult]:
        if not self.waited:
            deadline = time.monotonic() + WAIT_S
            expected = int(os.environ.get(EXPECTED, "0"))
            while len(_records()) < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            self.waited = True
        return self.inner.label(texts)


def _records() -> list[Path]:
    return list(Path(os.environ[RECORDS]).glob("*.json"))


def fingerprint(cfg) -> str:
    """The backend's fingerprint; in a labeler actor (the stage's constructor asks for it),
    also the actor's record."""
    import ray

    actor = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    if actor and RECORDS in os.environ:
        record = {
            "actor": actor,
            "pid": os.getpid(),
            "started": time.time(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        partial = Path(os.environ[RECORDS], f"{actor}.part")
        partial.write_text(json.dumps(record))
        partial.rename(partial.with_suffix(".json"))  # whole, for the counting in `label`
    return "probe+" + keyphrase.fingerprint(cfg.keyphrase)


def register() -> None:
    BACKENDS["probe"] = lambda: Backend(ProbeLabeler, fingerprint)


def main() -> None:
    import ray
    import ray.data

    from condlabel.config import load_convert_config
    from condlabel.convert.pipeline import run_conversion
    from condlabel.failures import exit_code, reason, root_cause

    address, records, source, output, *overrides = sys.argv[1:]
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([str(Path(here).parent), here])
    ray.init(
        address=address,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": path,
                RECORDS: records,
                EXPECTED: os.environ.get(EXPECTED, "0"),
            },
            "worker_process_setup_hook": "gpu_probe.register",
        },
        logging_level="ERROR",
    )
    # No downscale on low utilisation (see the module's docstring): every actor started is
    # one of the pool's.
    ray.data.DataContext.get_current().autoscaling_config.actor_pool_util_downscaling_threshold = -1
    cfg = load_convert_config(inputs=[source], output=output, overrides=overrides)
    if cfg.labeler.backend == "keyphrase":  # the probe stands in for it
        register()
        labeler = type(cfg.labeler).model_construct(**{**dict(cfg.labeler), "backend": "probe"})
        cfg = cfg.model_copy(update={"labeler": labeler})
    started = time.perf_counter()
    try:
        summary = run_conversion(cfg)
        result = {"code": 0, "rows": summary.rows_written}
    except Exception as exc:  # noqa: BLE001 - reported to the test as the CLI would
        cause = root_cause(exc)
        result = {"code": exit_code(cause), "reason": reason(cause)}
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
