#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds grpo's CUDA component for sm_90 (nvcc from PATH or /usr/local/cuda), runs
# every ctest test labelled gpu, then the fused-kernel timing program, and prints one table: each test's result, then
# each kernel's error against the CPU reference, time, and bandwidth as a fraction of a device-to-device copy.
#   cmake/gpu-check.sh [build-dir]        (default: build/gpu-check; CUDA_ARCH=90 by default)
# Exit status: 0 when every gpu test passed, 1 otherwise (and when no GPU is visible).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-"$root/build/gpu-check"}
arch=${CUDA_ARCH:-90}
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no GPU visible (nvidia-smi -L failed)" >&2
  exit 1
fi
command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found" >&2; exit 1; }

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRPO_WITH_CUDA=ON -DGRPO_BUILD_CUDA_KERNELS=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGRPO_BUILD_CLI=OFF -DGRPO_HEADER_CHECK=OFF \
  -DGRPO_TEST_SOURCES=backend_test.cpp >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" --target grpo_tests_cccl_gpu grpo_cccl_gpu_bench >"$build.build.log" 2>&1 ||
  { tail -n 60 "$build.build.log" >&2; exit 1; }

status=0
ctest --test-dir "$build" -L gpu --output-on-failure >"$build.ctest.log" 2>&1 || status=1
bench=$("$build/tests/cuda/grpo_cccl_gpu_bench" 2>&1) || status=1

echo "grpo gpu check: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)," \
  "nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_$arch, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| gpu test | result |"
echo "|---|---|"
sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: \([^ ]*\) [ .]*\**\([A-Za-z]*\).*/| \1 | \2 |/p' "$build.ctest.log"
echo
echo "$bench"
if ((status != 0)); then
  echo
  echo "gpu-check: failures; see $build.ctest.log" >&2
  grep -A 40 -m 1 "FAILED" "$build.ctest.log" >&2 || true
fi
exit $status
