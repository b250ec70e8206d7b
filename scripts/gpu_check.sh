#!/usr/bin/env bash
# Checks fast_s2s on a GPU machine in one command: builds the extension with its CUDA sources,
# runs the GPU tests, `fast-s2s verify --device cuda`, and `fast-s2s bench --device cuda` in
# float32, float16 and bfloat16 in one run (JSON, PNG if matplotlib is there, and a log; the
# fastest backend per op over the three dtypes, with the AUTO_PREFERENCE line it suggests, is in
# both), and prints where the results are.
#
#   bash scripts/gpu_check.sh                  # every step: build test verify bench
#   bash scripts/gpu_check.sh verify bench     # some of them (each step takes minutes at most)
#   bash scripts/gpu_check.sh plan             # what bench would time; needs no GPU
#
# torch (a CUDA build), nvcc and the test tools must already be installed: nothing is downloaded.
# The package is built in place with `pip install --no-build-isolation --no-deps -e .`.
#
# Environment (defaults in brackets):
#   PYTHON                  the Python with torch [.venv/bin/python if there, else python3]
#   FAST_S2S_RESULTS        where everything is written [bench_results]
#   FAST_S2S_BENCH_DTYPES   [float32 float16 bfloat16]
#   FAST_S2S_BENCH_ARGS     more `fast-s2s bench` options [--quick: the target shapes, short
#                           timing]; set it empty for the full case list
#   TORCH_CUDA_ARCH_LIST    [the GPU's compute capability, e.g. 9.0]; MAX_JOBS [nproc]
#   CUDA_HOME               [/usr/local/cuda when nvcc is there]
#
# Writes, under $FAST_S2S_RESULTS: nvidia-smi.txt, build.log, pytest-cuda.log, verify-cuda.log,
# bench-cuda.{json,png,log}. Exit status: 0 when every
# step passed, 1 when one failed, 2 when there is no GPU (or an unknown step was named).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
RESULTS="${FAST_S2S_RESULTS:-bench_results}"
read -r -a DTYPES <<< "${FAST_S2S_BENCH_DTYPES:-float32 float16 bfloat16}"
read -r -a BENCH_EXTRA <<< "${FAST_S2S_BENCH_ARGS---quick}"
ALL_STEPS=(build test verify bench)
STEPS=("$@")
[[ ${#STEPS[@]} -eq 0 ]] && STEPS=("${ALL_STEPS[@]}")

# The tests' conftest turns Triton's interpreter on unless told otherwise: on a GPU the Triton
# kernels must run compiled, in the tests as in the benchmark.
export TRITON_INTERPRET=0
export PYTHONUNBUFFERED=1

# The benchmark command, shared by `bench` and `plan`.
BENCH_CMD=("$PY" -m fast_s2s.cli bench --device cuda --dtype "$(IFS=,; echo "${DTYPES[*]}")"
  "${BENCH_EXTRA[@]}")

need_gpu() {
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no GPU visible to $PY (torch.cuda.is_available() is False); only the" \
      "'plan' step runs without one" >&2
    exit 2
  fi
}

step_build() {
  export FAST_S2S_CUDA=1
  if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
    export CUDA_HOME=/usr/local/cuda
  fi
  if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
    export TORCH_CUDA_ARCH_LIST
  fi
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  echo "building with CUDA_HOME=${CUDA_HOME:-unset} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  "$PY" -m pip install --no-build-isolation --no-deps -e . 2>&1 | tee "$RESULTS/build.log" || return 1
  "$PY" -c 'import sys, fast_s2s._extension as e
print("extension loaded:", e.extension_loaded(), "| cuda compiled:", e.cuda_compiled())
sys.exit(0 if e.cuda_compiled() else 1)' 2>&1 | tee -a "$RESULTS/build.log"
}

step_test() {
  "$PY" -m pytest -m cuda -q 2>&1 | tee "$RESULTS/pytest-cuda.log"
}

step_verify() {
  "$PY" -m fast_s2s.cli verify --device cuda 2>&1 | tee "$RESULTS/verify-cuda.log"
}

step_bench() {
  "${BENCH_CMD[@]}" --json "$RESULTS/bench-cuda.json" --plot "$RESULTS/bench-cuda.png" 2>&1 \
    | tee "$RESULTS/bench-cuda.log"
}

step_plan() {
  "${BENCH_CMD[@]}" --plan
}

for step in "${STEPS[@]}"; do
  case "$step" in
    build | test | verify | bench | plan) ;;
    *) echo "gpu_check: unknown step '$step'; choose from ${ALL_STEPS[*]} plan" >&2; exit 2 ;;
  esac
done
for step in "${STEPS[@]}"; do
  if [[ "$step" != plan ]]; then
    need_gpu  # before anything is built or written
    mkdir -p "$RESULTS"
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi > "$RESULTS/nvidia-smi.txt" 2>&1 || true
    fi
    break
  fi
done

failed=()
for step in "${STEPS[@]}"; do
  echo "== gpu_check: $step"
  start=$(date +%s)
  if "step_$step"; then
    echo "== gpu_check: $step ok ($(($(date +%s) - start)) s)"
  else
    echo "== gpu_check: $step FAILED ($(($(date +%s) - start)) s)"
    failed+=("$step")
  fi
done

if [[ -d "$RESULTS" && " ${STEPS[*]} " != " plan " ]]; then
  echo
  echo "== gpu_check: results in $RESULTS/"
  for f in "$RESULTS"/{nvidia-smi,build,pytest-cuda,verify-cuda}.* "$RESULTS"/bench-cuda.*; do
    [[ -f "$f" ]] && printf '  %s (%s bytes)\n' "$f" "$(wc -c < "$f")"
  done
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== gpu_check: FAILED steps: ${failed[*]}"
  exit 1
fi
echo "== gpu_check: every step passed (${STEPS[*]})"
