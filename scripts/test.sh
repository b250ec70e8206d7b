#!/usr/bin/env bash
# The README's tests: set up, then run the whole test suite (arguments go to pytest, e.g. -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
