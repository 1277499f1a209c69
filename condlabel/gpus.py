"""What an actor that reserved GPUs must see: CUDA devices.

Ray hands an actor the GPU ids it reserved (and sets CUDA_VISIBLE_DEVICES to them), whether or
not the node has those GPUs: a node may declare GPUs it does not have (`ray start --num-gpus`),
its driver may be missing, or the Python environment may hold a CPU build of torch. A labeler on
`device: auto` would then run on the CPU, tens of times slower and holding a GPU reservation
nobody uses; `cuda` would fail deep inside the model load. So an actor that reserved GPUs and
sees none fails at once, naming the setting, before any model is loaded.

torch (or CTranslate2) is imported only to count devices, and only in an actor that reserved a
GPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def cuda_device_count() -> int:
    """CUDA devices this process can use: torch's count, else CTranslate2's, else 0."""
    try:
        import torch

        return int(torch.cuda.device_count())
    except ImportError:
        pass
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except ImportError:
        return 0


def uses_device(backend_cfg: Any) -> bool:
    """Whether a labeler (or classifier) config runs a model on a device it picks: it has a
    `device` setting that is not `cpu` (the CPU labeler has none)."""
    device = getattr(backend_cfg, "device", None)
    return device is not None and str(device) != "cpu"


def check_reserved_gpus(
    reserved: Sequence[Any], key: str, backend_cfg: Any, count: int | None = None
) -> None:
    """Raise `ConfigError` naming `key` when this actor reserved GPUs (`reserved`, Ray's ids),
    its labeler would use one, and no CUDA device is visible (`count`: measured when None)."""
    if not reserved or not uses_device(backend_cfg):
        return
    if count is None:
        count = cuda_device_count()
    if count > 0:
        return
    from condlabel.config import ConfigError

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    raise ConfigError(
        [
            f"{key}: this actor reserved GPU {', '.join(map(str, reserved))} "
            f"(CUDA_VISIBLE_DEVICES={visible}) but sees no CUDA device: the node declares GPUs "
            "it does not have, its NVIDIA driver is missing, or this Python's torch is a CPU "
            f"build. Fix the node, or set {key}=0 to label on CPUs (nothing falls back silently)"
        ]
    )
