#!/usr/bin/env bash
# Make minerf importable on a GPU machine that has torch but cannot reach PyPI
# (the device image: torch, h5py, typer, rich, opencv, scipy, matplotlib are there).
# Installs the checkout without dependencies; mediapipe is not needed for train/render.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile . >/dev/null 2>&1 \
  || { echo "gpu_setup: pip install failed; trying again verbosely" >&2; python3 -m pip install --no-deps --no-build-isolation --no-index . ; }
python3 - <<'PY'
import torch, minerf_cli
print("minerf", minerf_cli.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
