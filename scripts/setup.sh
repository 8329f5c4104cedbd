#!/usr/bin/env bash
# Create .venv and install bids_lesionchange with HD-BET and the test tools (pinned; ~4 min, ~3.7 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the CPU build: an unpinned torch pulls several GB of CUDA wheels.
.venv/bin/python -m pip install -q -c .ci/constraints.txt torch==2.13.0
.venv/bin/python -m pip install -q -c .ci/constraints.txt -e '.[all]'
echo "bids_lesionchange installed in $(pwd)/.venv"
