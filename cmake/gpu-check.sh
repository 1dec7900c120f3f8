#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds grpo's CUDA component for sm_90 (nvcc from PATH or /usr/local/cuda), runs
# the gpu test executable (the backend's cases and the shared conformance suite on the device, the fused kernels'
# bf16/fp16 tests), then the fused-kernel timing program and, where python3 has a CUDA torch, its PyTorch peers
# (bench/peer_torch_gpu.py: eager, torch.compile, and Liger-Kernel where it imports) on the same shapes; prints one
# table per part.
#   cmake/gpu-check.sh [build-dir]        (default: build/gpu-check; CUDA_ARCH=90 by default)
# GRPO_GPU_PREBUILT=DIR skips the build and runs DIR/grpo_tests_cccl_gpu and DIR/grpo_cccl_gpu_bench, built elsewhere
# (nvcc needs about 15 minutes of 2 cores for the test executable: build it where CPU time is free, run it here).
# GRPO_GPU_LOGS=DIR keeps the logs and the JUnit report there (default: the build directory).
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

if [[ -n "${GRPO_GPU_PREBUILT:-}" ]]; then
  bin=$GRPO_GPU_PREBUILT
else
  command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found" >&2; exit 1; }
  mkdir -p "$build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRPO_WITH_CUDA=ON -DGRPO_BUILD_CUDA_KERNELS=ON \
    -DGRPO_BUILD_CUDA_GPU_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGRPO_BUILD_CLI=OFF -DGRPO_HEADER_CHECK=OFF \
    -DGRPO_TEST_SOURCES=backend_test.cpp >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
  cmake --build "$build" --target grpo_tests_cccl_gpu grpo_cccl_gpu_bench >"$build/build.log" 2>&1 ||
    { tail -n 60 "$build/build.log" >&2; exit 1; }
  bin=$build/tests/cuda
fi
logs=${GRPO_GPU_LOGS:-$build}
mkdir -p "$logs"

status=0
"$bin/grpo_tests_cccl_gpu" -r junit -o "$logs/gpu_tests.xml" >"$logs/gpu_tests.log" 2>&1 || status=1
"$bin/grpo_cccl_gpu_bench" >"$logs/gpu_bench.md" 2>&1 || status=1
peer="(python3 with a CUDA torch not found: no PyTorch peer)"
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  peer=$(python3 "$root/bench/peer_torch_gpu.py" --ours "$logs/gpu_bench.md" 2>&1) || status=1
  # torch.compile is timed apart and bounded: its compiler is the peer's, so its failure fails no grpo check.
  peer+=$'\n\n'$(timeout 300 python3 "$root/bench/peer_torch_gpu.py" --ours "$logs/gpu_bench.md" --variants compile \
    2>"$logs/peer_compile.log" || echo "(torch.compile run failed or timed out; see $logs/peer_compile.log)")
  if python3 -c 'import liger_kernel' >/dev/null 2>&1; then
    peer+=$'\n\n'$(timeout 300 python3 "$root/bench/peer_torch_gpu.py" --ours "$logs/gpu_bench.md" --variants liger \
      2>"$logs/peer_liger.log" || echo "(Liger-Kernel run failed or timed out; see $logs/peer_liger.log)")
  fi
fi

echo "grpo gpu check: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)," \
  "$(command -v nvcc >/dev/null && nvcc --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p'), sm_$arch," \
  "$(date -u +%Y-%m-%dT%H:%MZ)"
echo
python3 - "$logs/gpu_tests.xml" <<'EOF' || { echo "gpu-check: no JUnit report"; status=1; }
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
rows = [(c.get("name"), "failed" if c.find("failure") is not None or c.find("error") is not None else "passed",
         float(c.get("time", "0"))) for c in cases]
print(f"gpu tests: {sum(r[1] == 'passed' for r in rows)} of {len(rows)} passed, {sum(r[2] for r in rows):.1f} s")
for name, result, _ in rows:
    if result != "passed":
        print(f"  FAILED: {name}")
EOF
echo
cat "$logs/gpu_bench.md"
echo
echo "$peer"
if ((status != 0)); then
  echo
  echo "gpu-check: failures; see $logs/gpu_tests.log" >&2
  grep -B 5 -A 30 -m 3 "FAILED\|failed" "$logs/gpu_tests.log" >&2 || true
fi
exit $status
