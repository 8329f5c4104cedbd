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
# Headless Chromium is used by the report test (skipped when absent); install it where we can.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "note: chromium could not be installed; the browser test will be skipped"
fi
# A private SLURM for the cluster tests (tests/slurm; skipped when absent).
if ! command -v slurmctld >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null) \
    || echo "note: slurm-wlm/munge could not be installed; the SLURM tests will be skipped"
fi
echo "bids_lesionchange installed in $(pwd)/.venv"
