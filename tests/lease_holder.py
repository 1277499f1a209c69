"""A writer process for the lease tests: holds the lease of an output prefix and, with
`--writes N`, writes N small objects there, checking the lease before each and confirming it
after (as the pipeline's writer does). Prints `acquired` once it holds the lease; exits with
the CLI's exit codes.

    python tests/lease_holder.py OUTPUT_URI RUN_ID TTL_S [--writes N] [--interval S]
        [--ray GCS_ADDRESS] [--foreign-host]

`--ray`: a driver of that Ray cluster, recording its job in the lease; `--foreign-host`: the
lease names another machine, so only the Ray job (not the pid) can show the holder died.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import time

from condlabel.failures import exit_code
from condlabel.runs.runstate import Lease
from condlabel.storage import resolve


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("run_id")
    parser.add_argument("ttl_s", type=float)
    parser.add_argument("--writes", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--ray")
    parser.add_argument("--foreign-host", action="store_true")
    args = parser.parse_args()
    if args.foreign_host:
        import condlabel.runs.lease

        condlabel.runs.lease.host_id = lambda: "another-machine/boot/ns"
    lease = Lease(args.output, args.run_id, None, ttl_s=args.ttl_s)
    lease.acquire()
    if args.ray:
        import ray

        from condlabel.ray_runtime import loopback_only

        with loopback_only():  # the test's Ray listens on 127.0.0.1 only
            ray.init(address=args.ray, log_to_driver=False)
        lease.attach_ray()
    print("acquired", flush=True)
    fs, root = resolve(args.output)
    try:
        if not args.writes:
            time.sleep(3600)
        guard = lease.guard()
        for n in range(args.writes):
            lease.ensure_held()
            name = f"w-{args.run_id}-{n:05d}"
            fs.pipe_file(posixpath.join(root, name), b"x")
            # As the pipeline's writer: a write that a stop (SIGSTOP) held back until after a
            # takeover lands late; it is removed here, and the run stops (exit 4).
            guard.confirm_written(args.output.rstrip("/") + "/" + name)
            time.sleep(args.interval)
    except Exception as exc:  # noqa: BLE001 - any failure becomes the CLI's exit code
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exit_code(exc)
    finally:
        lease.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
