#!/usr/bin/env bash
# Install minerf into the current Python environment (the active venv, or $PYTHON).
#
#   bash install.sh                 # editable install with the test tools (development)
#   bash install.sh --no-editable   # a regular install from this checkout
#   bash install.sh --no-dev        # without pytest
#
# Environment:
#   PYTHON        the interpreter to install into (default: python3, i.e. the active venv's)
#   MINERF_TORCH  pip arguments used to install PyTorch when `import torch` fails
#                 (default: torch==2.13.0); an importable torch is always kept as it is.
#
# Why it is not a plain `pip install .`: see docs/install.md. In short, mediapipe 0.10.21
# (the last release with the legacy face models) declares jax, jaxlib, sounddevice,
# sentencepiece and a second, GUI OpenCV build that its face code never imports, so it is
# installed with --no-deps and pyproject.toml lists what it really needs.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

editable=1
extras="[dev]"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-editable) editable=0 ;;
        --no-dev) extras="" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see bash install.sh --help)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python3}
MEDIAPIPE_SPEC="mediapipe==0.10.21"
TORCH_SPEC=${MINERF_TORCH:-torch==2.13.0}

say() { printf 'install.sh: %s\n' "$*" >&2; }
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

command -v "$PY" >/dev/null 2>&1 || { say "no Python interpreter '$PY' (set PYTHON=...)"; exit 1; }
"$PY" - <<'EOF' || exit 1
import sys
if sys.version_info < (3, 10):
    sys.exit(f"install.sh: minerf needs Python >= 3.10, this is {sys.version.split()[0]} ({sys.executable})")
if sys.prefix == sys.base_prefix:
    print(f"install.sh: note: not in a virtual environment; installing into {sys.prefix}", file=sys.stderr)
EOF

# 1. PyTorch: keep an importable one (a user's CUDA build must survive); else install the pin.
if torch_version=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    say "keeping the installed torch $torch_version"
    "$PY" - "$torch_version" <<'EOF' || exit 1
import re, sys
v = tuple(int(x) for x in re.findall(r"\d+", sys.argv[1])[:2])
if v < (2, 2):
    sys.exit(f"install.sh: torch {sys.argv[1]} is older than the 2.2 minerf needs; upgrade it "
             "(or remove it and rerun: install.sh then installs MINERF_TORCH, default torch==2.13.0)")
EOF
else
    say "installing PyTorch: $TORCH_SPEC"
    read -r -a torch_args <<<"$TORCH_SPEC"  # MINERF_TORCH may hold several pip arguments
    pip_install "${torch_args[@]}"
fi

# 2. minerf and its real dependencies (one OpenCV: opencv-contrib-python-headless).
if [ "$editable" = 1 ]; then
    say "installing minerf (editable)${extras:+ with $extras}"
    pip_install -e ".$extras"
else
    say "installing minerf${extras:+ with $extras}"
    pip_install ".$extras"
fi

# 3. mediapipe without its declared extras (jax, jaxlib, sounddevice, sentencepiece,
#    opencv-contrib-python): the face solutions import none of them. Installed last, so
#    that pip's resolver never sees its unmet extras and prints no false conflict.
say "installing $MEDIAPIPE_SPEC (--no-deps)"
pip_install --no-deps "$MEDIAPIPE_SPEC"

# 4. Verify: imports, a working face mesh, dlib's face models, one headless OpenCV build,
#    the console script.
log=$(mktemp)
trap 'rm -f "$log" "$log.out"' EXIT
# (From another directory: in the checkout, `import minerf_cli` would find the source tree,
# not what was installed.)
if ! (cd "${TMPDIR:-/tmp}" && "$PY" - >"$log.out" 2>"$log") <<'EOF'
import json, subprocess, sys

problems = []
listed = {p["name"].lower(): p["version"] for p in json.loads(
    subprocess.run([sys.executable, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                   check=True, capture_output=True, text=True).stdout)}
others = sorted(n for n in ("opencv-python", "opencv-contrib-python", "opencv-python-headless") if n in listed)
if others:
    problems.append(
        "more than one OpenCV build is installed (" + ", ".join(others) + " besides "
        "opencv-contrib-python-headless); they overwrite each other's cv2. Fix: pip uninstall -y "
        + " ".join(others) + " opencv-contrib-python-headless && pip install --no-deps "
        "'opencv-contrib-python-headless>=4.8,<4.12'")
if "opencv-contrib-python-headless" not in listed:
    problems.append("opencv-contrib-python-headless is not installed")

import cv2
if not hasattr(cv2, "ximgproc"):
    problems.append(f"cv2 {cv2.__version__} at {cv2.__file__} is not the contrib build")
import numpy, h5py, torch, mediapipe as mp
from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation
with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True):
    pass
with face_detection.FaceDetection(model_selection=1), selfie_segmentation.SelfieSegmentation(model_selection=1):
    pass
import dlib
import shutil, sysconfig
import minerf_cli
from minerf_cli.metrics import FaceIdentity
FaceIdentity()  # dlib-bin and face-recognition-models: `minerf evaluate`'s face models load
script = shutil.which("minerf", path=sysconfig.get_path("scripts"))
cmd = [script] if script else [sys.executable, "-c", "from minerf_cli.app import main; main()"]
out = subprocess.run([*cmd, "--version"], capture_output=True, text=True)
if out.returncode != 0 or minerf_cli.__version__ not in out.stdout:
    problems.append(f"`minerf --version` failed: {out.stdout.strip()} {out.stderr.strip()}")
if problems:
    sys.exit("\n".join(problems))
cuda = "cuda " + torch.version.cuda if torch.cuda.is_available() else "cpu only"
print(f"minerf {minerf_cli.__version__} install OK: python {sys.version.split()[0]}, torch {torch.__version__} "
      f"({cuda}), mediapipe {mp.__version__}, opencv {cv2.__version__} (contrib, headless), "
      f"numpy {numpy.__version__}, h5py {h5py.__version__}, dlib {dlib.__version__}")
EOF
then
    say "verification failed:"
    grep -v -E '^(INFO: Created TensorFlow|WARNING: All log messages|W0000 )' "$log" >&2 || true
    exit 1
fi
command -v minerf >/dev/null 2>&1 || say "note: the 'minerf' script is not on PATH (activate the venv, or add $("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'))"
cat "$log.out"
