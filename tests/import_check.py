"""Which heavy packages importing some condlabel modules pulls in, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("ray", "torch", "transformers", "peft", "vllm")


def heavy_imports(modules: list[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The packages of `heavy` in `sys.modules` after importing `modules` (and nothing else)."""
    code = (
        "import sys\n"
        f"import {', '.join(modules)}\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]
