#!/usr/bin/env bash
# Run the default (fast) test suite; pass extra pytest arguments, e.g. -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_ENABLE_ONEDNN_OPTS=1 TF_CPP_MIN_LOG_LEVEL=2
set +e
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
exit $rc
