#!/usr/bin/env bash
# Creates tools/reference/.venv with PyTorch (CPU use only) for the reference scripts. Development only: CI
# does not need it, the fixtures it writes are committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q torch numpy safetensors pillow
echo "ready: $here/.venv/bin/python $here/gen_fixtures.py"
