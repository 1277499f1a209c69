"""The GPU check: what condlabel's GPU paths do on one real GPU, in a few minutes, with no Ray.

    python bench/gpu_check.py --prepare DIR          # on any machine (CPU): build the models
    python bench/gpu_check.py --models DIR --json    # on the GPU box: load them and check
    python bench/gpu_check.py --device cpu --json    # everything on the CPU (CI, slow tier)

Each check runs in a child process of its own with its own time limit, so a hang or a crash
leaves the others' results; each prints one JSON line as it finishes, and the last line is one
JSON object: {"device": ..., "checks": {NAME: {"passed", "skipped", "reason", ...figures}},
"passed": bool}. The checks (bench/gpu_checks.py) drive the labelers and the training step in
process, through the code the actors and workers run:

    labeler_bf16_vs_fp32       hf labeler in bf16 on the device vs fp32 on the CPU (+ chunks/s)
    logprob_batch_invariance   a chunk's raw log-prob alone vs in batches of 8 and 32, bf16
    oom_backoff                memory capped: batches halve, every chunk labeled or rejected
    packing_isolation          packed example == the example alone (SDPA; flash-attn if there)
    train_steps                training steps in bf16: the loss falls; tokens/s, peak memory
    guided_eval                generation.guidance_scale == the formula, token by token
    ct2                        ct2 labeler vs hf: agreement and speed (skipped without ct2)
    adherence                  control tokens learned? misalignment vs baseline (reported only)

Packages beyond torch, transformers, peft and pyarrow (and what they pull in: tokenizers,
safetensors, huggingface_hub, fsspec, pyyaml, filelock): pydantic, pandas and sentencex, which
the condlabel modules it drives import; vaderSentiment for `adherence` and ctranslate2 for
`ct2` (each skipped with the reason when missing). No Ray, no pytest (measured: every check runs
with both made unimportable). The models `--prepare` builds are a few MB; `--models DIR` keeps
them, and a run builds them there first when DIR does not hold them yet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

DEFAULT_MODELS = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "condlabel-gpu-check"
)
CHECKS = {  # name -> time limit on a GPU (s); the CPU gets `--cpu-scale` times as long
    "labeler_bf16_vs_fp32": 60,
    "logprob_batch_invariance": 45,
    "oom_backoff": 45,
    "packing_isolation": 30,
    "train_steps": 60,
    "guided_eval": 30,
    "ct2": 45,
    "adherence": 200,
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prepare", metavar="DIR", help="build the models into DIR (CPU) and exit")
    p.add_argument(
        "--models",
        metavar="DIR",
        default=str(DEFAULT_MODELS),
        help="models built by --prepare; built here first when missing (default: %(default)s)",
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument(
        "--json", action="store_true", help="JSON lines only (else a table on stderr too)"
    )
    p.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run these checks only")
    p.add_argument("--train-steps", type=int, default=300, help="--prepare: labeler steps")
    p.add_argument(
        "--threads",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 2) // 2)),
        help="CPU threads per process (default: half the cores, at most 8)",
    )
    p.add_argument("--cpu-scale", type=float, default=3.0, help="time limits x this on the CPU")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child: run this check, print its line
    return p.parse_args()


def main() -> int:
    args = parse_args()
    # Torch's default (a thread per core) on a small machine shared with other work spins its
    # threads against each other: measured on 2 busy cores, 50 labeler training steps took
    # 11 s on one thread and 297 s on two.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        return run_one(args)
    from gpu_checks import prepare

    started = time.perf_counter()
    if args.prepare:
        prepare(Path(args.prepare), args.train_steps)
        print(json.dumps({"prepared": args.prepare, "seconds": time.perf_counter() - started}))
        return 0
    models = Path(args.models)
    prepare(models, args.train_steps)  # nothing to do when `models` holds this recipe's models
    prepared_s = time.perf_counter() - started
    results = {name: run_child(name, models, args) for name in args.only or list(CHECKS)}
    final = {
        "device": device_name(args.device),
        "checks": results,
        "passed": all(r["passed"] for r in results.values()),
        "prepare_seconds": round(prepared_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.json:
        for name, r in results.items():
            state = "skipped" if r["skipped"] else "passed" if r["passed"] else "FAILED"
            print(f"{name:26} {state:8} {r['seconds']:6.1f}s  {r['reason']}", file=sys.stderr)
    print(json.dumps(final), flush=True)
    return 0 if final["passed"] else 1


def run_child(name: str, models: Path, args: argparse.Namespace) -> dict:
    """One check in its own process under its time limit; its JSON line, or why there is none."""
    limit = CHECKS[name] * (1 if args.device.startswith("cuda") else args.cpu_scale)
    cmd = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--models",
        str(models),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = str(args.threads)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if lines:
            result = json.loads(lines[-1])["result"]
        else:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            result = failed(f"exit {done.returncode}: {' | '.join(tail)[-600:]}")
    except subprocess.TimeoutExpired:
        result = failed(f"no result within its time limit of {limit:g}s (hung or too slow)")
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"check": name, **result}), flush=True)
    return result


def run_one(args: argparse.Namespace) -> int:
    import gpu_checks

    try:
        result = getattr(gpu_checks, args.one)(Path(args.models), args.device)
    except Exception as exc:  # noqa: BLE001 - a crashed check is a failed check, with its reason
        result = failed(f"{type(exc).__name__}: {str(exc)[:500]}")
    print(json.dumps({"result": result}, default=float), flush=True)
    return 0


def failed(reason: str) -> dict:
    return {"passed": False, "skipped": False, "reason": reason}


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"cpu ({os.cpu_count()} cores), torch {torch.__version__}"


if __name__ == "__main__":
    sys.exit(main())
