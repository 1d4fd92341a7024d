#!/usr/bin/env bash
# Create bench/.venv-fusionbench: FusionBench 0.2.33 next to our library, only for bench/moe_vs_fusionbench.py.
# torch and torchvision are pinned to the versions the app uses, so both sides run the same kernels.
# Usage: bash bench/setup_fusionbench.sh   (then: bench/.venv-fusionbench/bin/python bench/moe_vs_fusionbench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv-fusionbench
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
# torch first and alone: where a CPU wheel lies under /opt/wheels, this takes it (not the CUDA build from PyPI).
"${PIP[@]}" --find-links /opt/wheels torch==2.13.0
"${PIP[@]}" --find-links /opt/wheels torch==2.13.0 torchvision==0.28.0 fusion-bench==0.2.33 \
  open_clip_torch==3.3.0 safetensors
# Our repo importable without installing it (pyproject declares no packages): a .pth file puts the root on sys.path.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pwd > "$SITE/merge_explorer_repo.pth"

# Smoke check: our torchvision compat step first, then FusionBench's WEMoE module must import.
"$VENV/bin/python" - <<'PY'
import wemoe  # noqa: F401  (defines the torchvision schemas a CPU torch lacks, before anything imports open_clip)
import torch
import torchvision
from fusion_bench.models.we_moe import WeightEnsemblingMoE

print(f"ok: torch {torch.__version__}, torchvision {torchvision.__version__}, {WeightEnsemblingMoE.__module__}")
PY
