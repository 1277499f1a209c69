"""A conversion driver for tests/test_gpu_scheduling.py, run as its own process against a Ray
head that declares GPUs it does not have (`ray start --num-gpus 4`):

    python tests/gpu_probe.py ADDRESS RECORDS_DIR INPUT OUTPUT OVERRIDE...

`probe` is a labeler backend (the keyphrase labeler, registered the way the real backends are,
in every worker through Ray's setup hook) that writes, once per actor, what the actor was given:
its process id, `ray.get_gpu_ids()` and CUDA_VISIBLE_DEVICES. Each batch takes a moment, so
every actor of the pool gets batches. Prints the run's exit code and summary as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from condlabel.labelers import BACKENDS, Backend, LabelResult, keyphrase

RECORDS = "CONDLABEL_GPU_PROBE_DIR"


class ProbeLabeler:
    def __init__(self, cfg) -> None:
        import ray

        self.inner = keyphrase.KeyphraseLabeler(cfg.keyphrase)
        self.fingerprint = fingerprint(cfg)
        record = {
            "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        Path(os.environ[RECORDS], f"{os.getpid()}.json").write_text(json.dumps(record))

    def label(self, texts: list[str]) -> list[LabelResult]:
        time.sleep(1.0)  # so the whole pool gets batches, however slowly its actors start
        return self.inner.label(texts)


def fingerprint(cfg) -> str:
    return "probe+" + keyphrase.fingerprint(cfg.keyphrase)


def register() -> None:
    BACKENDS["probe"] = lambda: Backend(ProbeLabeler, fingerprint)


def main() -> None:
    import ray

    from condlabel.config import load_convert_config
    from condlabel.convert.pipeline import run_conversion
    from condlabel.failures import exit_code, reason, root_cause

    address, records, source, output, *overrides = sys.argv[1:]
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([str(Path(here).parent), here])
    ray.init(
        address=address,
        runtime_env={
            "env_vars": {"PYTHONPATH": path, RECORDS: records},
            "worker_process_setup_hook": "gpu_probe.register",
        },
        logging_level="ERROR",
    )
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
