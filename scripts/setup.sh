#!/usr/bin/env bash
# Create (or update) the project's virtual environment: bash scripts/setup.sh
#
# torch is installed first and pinned (TORCH_SPEC, default torch==2.13.0): on a CPU-only
# machine whose pip finds the CPU wheel locally (find-links) that wheel is used; on a GPU
# machine PyPI's build of the same release (with CUDA) is used. The package's own range
# (torch>=2.4,<2.15) is then already satisfied, so nothing else pulls another torch.
# For a CPU-only machine without a local wheel, pass the CPU index yourself:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
echo "[setup] installing $TORCH_SPEC"
"${PIP[@]}" "$TORCH_SPEC" 2> >(grep -v "^WARNING: Location" >&2)
echo "[setup] installing hmmrnn with the book and test extras"
"${PIP[@]}" -e ".[book,test]" 2> >(grep -v "^WARNING: Location" >&2)
"$VENV/bin/python" - <<'PY'
import torch, geomloss, hmmrnn
from hmmrnn.bookhtml import mathjax_source
print(f"[setup] ok: torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), geomloss {geomloss.__version__}, hmmrnn {hmmrnn.__version__}")
print(f"[setup] MathJax for the book (served offline): {mathjax_source()}")
PY
