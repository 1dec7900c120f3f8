#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# On a machine with an NVIDIA GPU: the GPU checks of grpo, in three parts (GRPO_GPU_PARTS, default all three), each
# printing its own table.
#   cccl     builds the CUDA component for sm_$CUDA_ARCH (nvcc from PATH or /usr/local/cuda), runs the gpu test
#            executable (the backend's cases and the shared conformance suite on the device, the fused kernels'
#            bf16/fp16 tests), the fused-kernel timing program and, where python3 has a CUDA torch, its PyTorch peers
#            (bench/peer_torch_gpu.py: eager, torch.compile, Liger-Kernel where it imports) on the same shapes.
#   torch    builds grpo_tests_torch, grpo_tests_torch_cuda and the grpo CLI against python3's torch (its
#            torch.utils.cmake_prefix_path: the pip wheel's LibTorch, the only one whose ABI and CUDA match the
#            machine's) and runs them: the [cuda] cases, then the whole suite (CUDA cases run for real), then the
#            conformance suite on CUDA tensors. With nvcc also grpo_tests_torch_cuda_kernels (the LibTorch backend's
#            row primitives on grpo::cuda's kernels: against the torch ops, the fused Functions, the conformance
#            suite) and grpo_torch_cuda_kernels_bench, whose table (forward + backward of the token log-probs, JSD,
#            top-k KL and SFT losses against PyTorch eager ops, time and peak memory) follows the LibTorch table.
#   smollm2  with that CLI, `grpo score` of tests/data/hf/smollm2_fixture.json's pairs on $GRPO_TORCH_DEVICE and on
#            the CPU against transformers, and a short `grpo train` (GRPO on the arithmetic task, no cold start) of
#            SmolLM2-135M-Instruct with --policy torch: steps/s, generation and training tokens/s, peak GPU memory.
# Three more, named in GRPO_GPU_PARTS only (not in the default), for issue 11's SmolLM2 job and TRL comparison:
#   build    only configures and builds the grpo CLI (and keeps a GGUF half that came along): the first of two calls.
#   job      `grpo eval` of the instruct model, then examples/configs/r1_smollm2.toml end to end with the CLI on
#            $GRPO_TORCH_DEVICE (cold start, GRPO, evaluations, save) and bench/smollm2_report.py's table:
#            held-out accuracy of the instruct model, after the cold start and after GRPO, wall time,
#            generation and training tokens/s, MFU, peak GPU memory, the step's time split; curves in the logs.
#   trl      `grpo sft` with the same config (the weights both start from), then bench/trl_compare.py: TRL's
#            GRPOTrainer (from .gpu-deps/wheels unless python3 has it) and grpo on the same prompts and settings,
#            the first step's loss and gradient norm on the same batch, per-step wall time and peak memory.
# The job and trl parts build only the CLI (the tests are for the torch and smollm2 parts).
#   cmake/gpu-check.sh [build-dir]        (cccl's build directory; default: build/gpu-check; CUDA_ARCH=90 by default)
# The weights of SmolLM2 (GRPO_SMOLLM2_WEIGHTS): `auto` takes GRPO_SMOLLM2_DIR (a converted directory), else the GGUF
# when both halves made by `cmake/gpu-deps.sh --gguf-parts` are here (joined, checked against its sha256 and
# converted with `grpo convert-gguf`; the reference is then the fixture, transformers 5.25 in fp32), else random
# weights of the same shape (.gpu-deps/smollm2: config and tokenizer, weights drawn by transformers with seed 0;
# the reference is then transformers on this machine, fp32 on its CPU). `gguf` insists on the GGUF and checks it
# before anything is built; `random` skips the real weights.
# The LibTorch parts need what the device image lacks (Catch2 v2, CLI11, PCRE2, utf8proc, maybe pkg-config): run
# cmake/gpu-deps.sh first on a Debian 12 machine; it fills .gpu-deps/ (gitignored), which this script passes to CMake
# (CMAKE_PREFIX_PATH, PKG_CONFIG_PATH, its pkg-config when the machine has none).
# Settings:
#   GRPO_GPU_PREBUILT=DIR   cccl: runs DIR/grpo_tests_cccl_gpu and DIR/grpo_cccl_gpu_bench, built elsewhere (nvcc needs
#                           about 15 minutes of 2 cores for the test executable: build it where CPU time is free)
#   GRPO_TORCH_PREBUILT=DIR torch, smollm2: runs DIR/grpo_tests_torch, DIR/grpo_tests_torch_cuda and DIR/grpo, built
#                           against the same torch wheel with this checkout at the same absolute path (the tests read
#                           their fixtures from the path compiled in).
#                           Nobody builds them so yet: the device machine's 16 cores build them in a few minutes.
#   GRPO_GPU_LOGS=DIR       logs and JUnit reports (default: the build directories)
#   GRPO_GPU_DRY_RUN=1      prints the commands of the chosen parts instead of running them
#   GRPO_TORCH_DEVICE       cuda (default) or cpu: a rehearsal of the torch parts on a machine without a GPU
#   GRPO_TORCH_BUILD        the LibTorch build directory (default: build/gpu-check-torch)
#   GRPO_TORCH_DIR          LibTorch's CMake directory instead of python3's torch's
#   GRPO_TORCH_CMAKE_ARGS   more arguments of its configure, split at spaces (a machine with a system LibTorch too:
#                           TorchConfig.cmake searches the system before its own directory, so ignore the system's
#                           with -DCMAKE_IGNORE_PATH=/usr/lib/x86_64-linux-gnu/cmake/Caffe2;/usr/lib/x86_64-linux-gnu)
#   GRPO_TRAIN_STEPS        GRPO steps of the training run (default 10); GRPO_TRAIN_SET="k=v ...": more --set;
#                           GRPO_TRAIN_TIMEOUT: its limit in seconds (default 150; the steps done by then still count)
#   GRPO_JOB_SET="k=v ..."  job: more --set for the run (e.g. "max_steps=60" to fit a shorter call);
#                           GRPO_JOB_TIMEOUT its limit in seconds (default 330; the steps done by then are measured)
#   GRPO_TRL_STEPS          trl: steps of each run (default 8; the first is left out of the timing);
#                           GRPO_TRL_SET="k=v ...": more --set for both (eval.size=8 is set); GRPO_TRL_TIMEOUT
#                           (default 240 s); GRPO_TRL_TOLERANCE (relative; default 1e-3 on the CPU, 2e-2 on a GPU,
#                           where both compute in bf16); GRPO_TRL_POLICIES (default torch; torch,native on the CPU);
#                           GRPO_TRL_VLLM=1: a second TRL run generating with vLLM, where python3 can import it (the
#                           image has none, and its wheels are far over a call's 64 MiB: not carried)
#   PYTHON                  the python with torch and transformers (default python3); GRPO_GPU_JOBS (default nproc)
# Exit status: 0 when every check of the chosen parts passed, 1 otherwise (and when no GPU is visible).
#
# The device-machine call (the `run` tool; nvidia-h100-x1 or nvidia-h200, whose image has nvcc 13.0, CMake, ninja and
# python3 = /opt/torch/.venv with torch 2.11.0+cu130 and transformers), after `bash cmake/gpu-deps.sh` here:
#   command: GRPO_GPU_PARTS='torch smollm2' GRPO_GPU_LOGS=/tmp/gpu-logs bash cmake/gpu-check.sh; rc=$?;
#            tar -czf $OUT/gpu-check-logs.tgz -C /tmp gpu-logs; exit $rc
#   carry: [".gpu-deps/prefix", ".gpu-deps/smollm2"]      timeout_s: 540
# It should take 1 minute to configure, 2 to 3 to build with 16 jobs (750 to 900 CPU-seconds on this 2-core Debian
# machine, 8 minutes with 2 jobs; the slowest file about 2 minutes alone), then 2 to 4 for tests, model, score and
# 10 GRPO steps (the train run is cut at GRPO_TRAIN_TIMEOUT). It prints "grpo LibTorch check on cuda", a table of
# torch and toolchain versions, build times and test counts (grpo_tests_torch [cuda], all of grpo_tests_torch,
# grpo_tests_torch_cuda), then one for SmolLM2: the model, max |log-prob diff| of `grpo score` on cuda (bf16
# compute: expect 1e-2 to 1e-1) and on the cpu (fp32: expect < 1e-4) against the reference, GRPO steps/s (the first
# step left out), rollout and update tokens/s, the mean completion length, the reward, peak GPU memory and the run's
# wall time.
# Real weights take a second call while the machine is still warm (30 s after the first returns): run
# `bash cmake/gpu-deps.sh --gguf-parts` here, add ".gpu-deps/smollm2-gguf.1" to the first call's carry (about 55 MB
# in all; the half waits in the build directory there), then at once
#   command: GRPO_GPU_PARTS=smollm2 GRPO_SMOLLM2_WEIGHTS=gguf GRPO_GPU_LOGS=/tmp/gpu-logs2 bash cmake/gpu-check.sh;
#            rc=$?; tar -czf $OUT/gpu-check-logs2.tgz -C /tmp gpu-logs2; exit $rc
#   carry: [".gpu-deps/prefix", ".gpu-deps/smollm2", ".gpu-deps/smollm2-gguf.2"]      timeout_s: 300
# which stops within seconds if the first half is gone (a fresh machine: then give it back).
# Issue 11's job and TRL comparison, after `GRPO=build/<yours>/grpo bash cmake/gpu-deps.sh --gguf-parts` here (the
# working tree is about 9 MB, so each call carries one GGUF half: the first call builds, the second measures):
#   call 1  command: GRPO_GPU_PARTS=build GRPO_GPU_LOGS=/tmp/gpu-logs bash cmake/gpu-check.sh
#           carry: [".gpu-deps/prefix", ".gpu-deps/smollm2", ".gpu-deps/smollm2-gguf.1"]      timeout_s: 420
#   call 2, at once: command: GRPO_GPU_PARTS='job trl' GRPO_SMOLLM2_WEIGHTS=gguf GRPO_GPU_LOGS=/tmp/gpu-logs2
#           bash cmake/gpu-check.sh; rc=$?; tar -czf $OUT/gpu-job-logs.tgz -C /tmp gpu-logs2; exit $rc
#           carry: [".gpu-deps/smollm2-gguf.2", ".gpu-deps/wheels"]                           timeout_s: 600
# (the second reuses the first's build directory and .gpu-deps/prefix on the warm machine). Expected: call 1 about
# 1 minute to configure and 2 to build the CLI; call 2 about 5 minutes for the job (GRPO_JOB_TIMEOUT=330) and 2 to 4
# for the comparison (GRPO_TRL_TIMEOUT=240). Rehearsed here on the CPU only (GRPO_TORCH_DEVICE=cpu, tiny settings
# through GRPO_JOB_SET / GRPO_TRL_SET, transformers 5.17 and accelerate 1.15 as on the device, TRL installed from
# .gpu-deps/wheels); never run on a GPU yet.
# Verified here, without a GPU (GRPO_TORCH_DEVICE=cpu, Debian's headers and pkg-config hidden in a mount namespace):
# the whole torch and smollm2 parts against pip's torch 2.15.0+cu132 with nvcc 13.0, and a configure against
# Debian's LibTorch 1.13. Not verified: anything on a device (its compiler and CMake versions, the configure against
# torch 2.11's CMake files with its CUDA toolkit, the [cuda] cases, nvidia-smi's sampling, the warm second call).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-"$root/build/gpu-check"}
arch=${CUDA_ARCH:-90}
parts=" ${GRPO_GPU_PARTS:-cccl torch smollm2} "
dry_run=${GRPO_GPU_DRY_RUN:-0}
device=${GRPO_TORCH_DEVICE:-cuda}
python=${PYTHON:-python3}
jobs=${GRPO_GPU_JOBS:-$(nproc)}
deps=$root/.gpu-deps
torch_build=${GRPO_TORCH_BUILD:-"$root/build/gpu-check-torch"}
weights=${GRPO_SMOLLM2_WEIGHTS:-auto}
train_steps=${GRPO_TRAIN_STEPS:-10}
train_timeout=${GRPO_TRAIN_TIMEOUT:-150}
job_timeout=${GRPO_JOB_TIMEOUT:-330}
trl_steps=${GRPO_TRL_STEPS:-8}
trl_timeout=${GRPO_TRL_TIMEOUT:-240}
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"

has_part() { [[ "$parts" == *" $1 "* ]]; }
# Runs "$@" with its output into the file $1, or prints the command under GRPO_GPU_DRY_RUN=1.
run_logged() {
  local log=$1
  shift
  if ((dry_run)); then
    printf '+'
    printf ' %q' "$@"
    printf ' >%q 2>&1\n' "$log"
  else
    "$@" >"$log" 2>&1
  fi
}
# "label: X of Y passed, Z s" from the JUnit report $2, then the failed cases; with a third argument `row`, one
# markdown table row "| label | X of Y passed, Z s; FAILED: ... |".
junit_summary() {
  "$python" - "$@" <<'EOF'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[2]).getroot().iter("testcase")
rows = [(c.get("name"), "failed" if c.find("failure") is not None or c.find("error") is not None else "passed",
         float(c.get("time", "0"))) for c in cases]
summary = f"{sum(r[1] == 'passed' for r in rows)} of {len(rows)} passed, {sum(r[2] for r in rows):.1f} s"
failed = [f"FAILED: {name}" for name, result, _ in rows if result != "passed"]
if sys.argv[3:] == ["row"]:
    print(f"| {sys.argv[1]} | {'; '.join([summary] + failed)} |")
else:
    print(f"{sys.argv[1]}: {summary}")
    for line in failed:
        print(f"  {line}")
EOF
}

if ((!dry_run)) && { has_part cccl || [[ "$device" != cpu ]]; } && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no GPU visible (nvidia-smi -L failed)" >&2
  exit 1
fi
status=0

# The GGUF halves (cmake/gpu-deps.sh --gguf-parts) travel in different calls: each is kept in the build directory,
# which a warm machine keeps between calls, until both are there.
gguf_dir=$torch_build/smollm2/gguf-parts
gguf_sha256_file=$deps/smollm2/gguf.sha256
gguf_ready() {
  [[ -f "$gguf_sha256_file" ]] && compgen -G "$gguf_dir/smollm2-gguf.*" >/dev/null &&
    [[ "$(cat "$gguf_dir"/smollm2-gguf.* | sha256sum | cut -d' ' -f1)" == "$(cut -d' ' -f1 "$gguf_sha256_file")" ]]
}
if { has_part smollm2 || has_part job || has_part trl || has_part build; } && ((!dry_run)); then
  if compgen -G "$deps/smollm2-gguf.*" >/dev/null; then
    mkdir -p "$gguf_dir"
    cp "$deps"/smollm2-gguf.* "$gguf_dir/"
  fi
  if [[ "$weights" == gguf ]] && ! has_part build && ! gguf_ready; then
    echo "gpu-check: GRPO_SMOLLM2_WEIGHTS=gguf but the GGUF parts in $gguf_dir (" "$gguf_dir"/smollm2-gguf.* ")" \
      "do not join into the file of $gguf_sha256_file: the other part's call ran on another machine" >&2
    exit 1
  fi
fi

cccl_part() {
  local bin logs=${GRPO_GPU_LOGS:-$build} peer
  if [[ -n "${GRPO_GPU_PREBUILT:-}" ]]; then
    bin=$GRPO_GPU_PREBUILT
  else
    command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found" >&2; return 1; }
    ((dry_run)) || mkdir -p "$build"
    run_logged "$build/configure.log" cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DGRPO_WITH_CUDA=ON -DGRPO_BUILD_CUDA_KERNELS=ON -DGRPO_BUILD_CUDA_GPU_TESTS=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGRPO_BUILD_CLI=OFF -DGRPO_HEADER_CHECK=OFF \
      -DGRPO_TEST_SOURCES=backend_test.cpp ||
      { cat "$build/configure.log" >&2; return 1; }
    run_logged "$build/build.log" cmake --build "$build" --target grpo_tests_cccl_gpu grpo_cccl_gpu_bench ||
      { tail -n 60 "$build/build.log" >&2; return 1; }
    bin=$build/tests/cuda
  fi
  ((dry_run)) || mkdir -p "$logs"
  local result=0
  run_logged "$logs/gpu_tests.log" "$bin/grpo_tests_cccl_gpu" -r junit -o "$logs/gpu_tests.xml" || result=1
  run_logged "$logs/gpu_bench.md" "$bin/grpo_cccl_gpu_bench" || result=1
  ((dry_run)) && return 0
  peer="(python3 with a CUDA torch not found: no PyTorch peer)"
  if "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    peer=$("$python" "$root/bench/peer_torch_gpu.py" --ours "$logs/gpu_bench.md" 2>&1) || result=1
    # torch.compile is timed apart and bounded: its compiler is the peer's, so its failure fails no grpo check.
    peer+=$'\n\n'$(timeout 300 "$python" "$root/bench/peer_torch_gpu.py" --ours "$logs/gpu_bench.md" \
      --variants compile 2>"$logs/peer_compile.log" ||
      echo "(torch.compile run failed or timed out; see $logs/peer_compile.log)")
    if "$python" -c 'import liger_kernel' >/dev/null 2>&1; then
      peer+=$'\n\n'$(timeout 300 "$python" "$root/bench/peer_torch_gpu.py" --ours "$logs/gpu_bench.md" \
        --variants liger 2>"$logs/peer_liger.log" ||
        echo "(Liger-Kernel run failed or timed out; see $logs/peer_liger.log)")
    fi
  fi
  echo "grpo gpu check: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)," \
    "$(command -v nvcc >/dev/null && nvcc --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p'), sm_$arch," \
    "$(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  junit_summary "gpu tests" "$logs/gpu_tests.xml" || { echo "gpu-check: no JUnit report"; result=1; }
  echo
  cat "$logs/gpu_bench.md"
  echo
  echo "$peer"
  if ((result != 0)); then
    echo
    echo "gpu-check: failures; see $logs/gpu_tests.log" >&2
    grep -B 5 -A 30 -m 3 "FAILED\|failed" "$logs/gpu_tests.log" >&2 || true
  fi
  return $result
}

# The LibTorch build: python3's torch, the carried .gpu-deps, only the three executables.
tbin=$torch_build/tests/torch
with_nccl=0
grpo_bin=$torch_build/grpo
torch_logs=${GRPO_GPU_LOGS:-$torch_build/logs}
torch_rows=()
torch_info=""
torch_setup() {
  local info torch_dir lib_dirs
  info=$("$python" -c 'import glob, os, torch
print(torch.__version__, "CUDA", torch.version.cuda, "cxx11 ABI", torch.compiled_with_cxx11_abi(),
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))
lib = os.path.join(os.path.dirname(torch.__file__), "lib")
nvidia = glob.glob(os.path.join(os.path.dirname(os.path.dirname(lib)), "nvidia", "*", "lib"))
print(":".join([lib] + sorted(nvidia)))' 2>/dev/null) ||
    info=$'(no torch in '"$python"$')\n\n'
  torch_dir=${GRPO_TORCH_DIR:-$(sed -n 2p <<<"$info")}
  lib_dirs=$(sed -n 3p <<<"$info")
  ((dry_run)) || mkdir -p "$torch_logs"
  # The image may lack pkg-config: then Debian's pkgconf from .gpu-deps.
  local pkg_config_from=system
  pkg-config --version >/dev/null 2>&1 || pkg_config_from=.gpu-deps
  torch_info=$(head -n 1 <<<"$info")
  torch_rows+=("| torch | $torch_info |"
    "| toolchain | $(${CXX:-c++} --version | head -n 1), $(cmake --version | head -n 1)$(command -v nvcc >/dev/null &&
      nvcc --version | sed -n 's/.*release \([0-9.]*\).*/, nvcc \1/p'), pkg-config from $pkg_config_from |")
  # The executables load the CUDA libraries python's torch loads (the wheels'), not the toolkit's copies that their
  # RUNPATH names first (libcudart from /usr/local/cuda/lib); catch_discover_tests runs one at build time already.
  [[ -n "$lib_dirs" ]] && export LD_LIBRARY_PATH="$lib_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if [[ -n "${GRPO_TORCH_PREBUILT:-}" ]]; then
    tbin=$GRPO_TORCH_PREBUILT
    grpo_bin=$GRPO_TORCH_PREBUILT/grpo
    torch_rows+=("| build | prebuilt: $tbin |")
    return 0
  fi
  if [[ -z "$torch_dir" ]] && ((dry_run)); then torch_dir="<$python's torch.utils.cmake_prefix_path>/Torch"; fi
  [[ -n "$torch_dir" ]] || { echo "gpu-check: $python has no torch and GRPO_TORCH_DIR is unset" >&2; return 1; }
  # A CUDA LibTorch's CMake files enable CUDA and take the architectures from TORCH_CUDA_ARCH_LIST (else they probe
  # the GPU). Where nvcc is, grpo::cuda comes along for grpo_tests_torch_cuda_kernels and its timing program, the
  # LibTorch backend on grpo::cuda's kernels: the only files here compiled by nvcc, for sm_$arch
  # (CMAKE_CUDA_ARCHITECTURES: CMake's default, once LibTorch's files have enabled CUDA, is nvcc's oldest one).
  local cuda_args=(-DGRPO_WITH_CUDA=OFF)
  if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
    cuda_args=(-DGRPO_WITH_CUDA=ON -DGRPO_BUILD_CUDA_KERNELS=ON -DGRPO_BUILD_CUDA_GPU_TESTS=ON
      "-DCMAKE_CUDA_ARCHITECTURES=$arch")
  fi
  local args=(-S "$root" -B "$torch_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRPO_WITH_TORCH=ON
    "-DTorch_DIR=$torch_dir" "${cuda_args[@]}" -DGRPO_BUILD_BENCH=OFF -DGRPO_HEADER_CHECK=OFF
    -DGRPO_BUILD_EXAMPLES=OFF -DGRPO_BUILD_CLI=ON "-DTORCH_CUDA_ARCH_LIST=${arch:0:-1}.${arch: -1}")
  # The wheel's libtorch_cuda.so finds its CUDA libraries (NCCL, cuBLAS, cuDNN, ...) in the nvidia-* wheels beside it
  # through its RPATH, but ld searches the executable's -rpath first, where the toolkit's own, possibly older, copies
  # are (/usr/local/cuda/lib for libcudart): -rpath-link puts the wheels' first at link time. At run time the
  # library's RPATH already wins.
  [[ -n "$lib_dirs" ]] && args+=("-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$lib_dirs")
  # NCCL (grpo::nccl, the 1-rank "trains through NCCL" check) only where its header is: the torch wheel's nvidia-nccl
  # first (one libnccl per process: torch's), else the CUDA toolkit's.
  local nccl_header="" dir
  local -a wheel_libs
  IFS=: read -ra wheel_libs <<<"$lib_dirs"
  for dir in "${wheel_libs[@]}" /usr/local/cuda/lib64; do
    [[ -f "$dir/../include/nccl.h" ]] && { nccl_header=$dir/../include/nccl.h; break; }
  done
  if [[ -n "$nccl_header" ]] || ((dry_run)); then
    args+=(-DGRPO_WITH_NCCL=ON)
    with_nccl=1
  fi
  local extra_args=()
  read -ra extra_args <<<"${GRPO_TORCH_CMAKE_ARGS:-}"
  args+=("${extra_args[@]}")
  if [[ -d "$deps/prefix" ]]; then
    args+=("-DCMAKE_PREFIX_PATH=$deps/prefix")
    export PKG_CONFIG_PATH="$deps/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    [[ "$pkg_config_from" == .gpu-deps ]] && args+=("-DPKG_CONFIG_EXECUTABLE=$deps/prefix/bin/pkg-config")
  fi
  local t0=$SECONDS
  run_logged "$torch_logs/torch_configure.log" cmake "${args[@]}" ||
    { tail -n 60 "$torch_logs/torch_configure.log" >&2; return 1; }
  local t1=$SECONDS targets=(grpo_cli)
  # The job, trl and build parts need the CLI alone; the tests only for the torch and smollm2 parts.
  if has_part torch || has_part smollm2; then
    targets+=(grpo_tests_torch)
    ((with_nccl)) && targets+=(grpo_tests_nccl grpo_tests_nccl_torch)
    # grpo_tests_torch_cuda exists only with a CUDA LibTorch (tests/torch/CMakeLists.txt).
    # grep -c reads all of ninja's output (grep -q could end the pipe early, and pipefail would then fail it).
    if ((dry_run)) ||
      ninja -C "$torch_build" -t targets all 2>/dev/null | grep -c '^grpo_tests_torch_cuda:' >/dev/null; then
      targets+=(grpo_tests_torch_cuda)
    fi
    # With a CUDA LibTorch and nvcc too: the LibTorch backend on grpo::cuda's kernels (tests/torch/CMakeLists.txt).
    if ((dry_run)) ||
      ninja -C "$torch_build" -t targets all 2>/dev/null | grep -c '^grpo_tests_torch_cuda_kernels:' >/dev/null; then
      targets+=(grpo_tests_torch_cuda_kernels grpo_torch_cuda_kernels_bench)
    fi
  fi
  run_logged "$torch_logs/torch_build.log" cmake --build "$torch_build" -j "$jobs" --target "${targets[@]}" ||
    { grep -m 5 -A 12 "error\|FAILED" "$torch_logs/torch_build.log" >&2; tail -n 20 "$torch_logs/torch_build.log" >&2
      return 1; }
  torch_rows+=("| build | configure $((t1 - t0)) s, ${targets[*]} $((SECONDS - t1)) s ($jobs jobs) |")
}

torch_part() {
  local result=0 rc=0
  # Bounded, so that a hang on the device leaves time for the rest and for the logs to come back.
  run_logged "$torch_logs/torch_tests_cuda.log" timeout 300 "$tbin/grpo_tests_torch" "[cuda]" -r junit \
    -o "$torch_logs/torch_tests_cuda.xml" || result=1
  run_logged "$torch_logs/torch_tests.log" timeout 300 "$tbin/grpo_tests_torch" -r junit \
    -o "$torch_logs/torch_tests.xml" || result=1
  if [[ -x "$tbin/grpo_tests_torch_cuda" ]] || ((dry_run)); then
    run_logged "$torch_logs/torch_cuda_conformance.log" timeout 300 "$tbin/grpo_tests_torch_cuda" -r junit \
      -o "$torch_logs/torch_cuda_conformance.xml" || rc=$?
  fi
  # The LibTorch backend's row primitives on grpo::cuda's kernels: the tests, then the timing against eager ops.
  local kernels_rc=0
  if [[ -x "$tbin/grpo_tests_torch_cuda_kernels" ]] || ((dry_run)); then
    run_logged "$torch_logs/torch_cuda_kernels.log" timeout 300 "$tbin/grpo_tests_torch_cuda_kernels" -r junit \
      -o "$torch_logs/torch_cuda_kernels.xml" || kernels_rc=$?
    run_logged "$torch_logs/torch_cuda_kernels_bench.log" timeout 240 "$tbin/grpo_torch_cuda_kernels_bench" ||
      result=1
  fi
  # One rank through a real NCCL communicator (the device path of the torch policy's gradients included).
  local t nccl_bin=${GRPO_TORCH_PREBUILT:-$torch_build/tests/nccl}
  if ((with_nccl)); then
    for t in grpo_tests_nccl grpo_tests_nccl_torch; do
      run_logged "$torch_logs/$t.log" timeout 300 "$nccl_bin/$t" --require-gpu "[gpu]" -r junit \
        -o "$torch_logs/$t.xml" || result=1
    done
  fi
  ((dry_run)) && return 0
  if ((with_nccl)); then
    for t in grpo_tests_nccl grpo_tests_nccl_torch; do
      torch_rows+=("$(junit_summary "$t [gpu]" "$torch_logs/$t.xml" row 2>&1)")
    done
  fi
  torch_rows+=("$(junit_summary "grpo_tests_torch [cuda]" "$torch_logs/torch_tests_cuda.xml" row 2>&1)"
    "$(junit_summary "grpo_tests_torch, all" "$torch_logs/torch_tests.xml" row 2>&1)")
  # The [cuda] cases WARN and return where LibTorch sees no device (JUnit reports them passed): say so.
  [[ "$torch_info" == *"device none"* ]] &&
    torch_rows+=("| note | torch sees no CUDA device: the [cuda] cases returned early |")
  if [[ -f "$torch_logs/torch_cuda_kernels.xml" ]]; then
    torch_rows+=("$(junit_summary "grpo_tests_torch_cuda_kernels" "$torch_logs/torch_cuda_kernels.xml" row 2>&1)")
    ((kernels_rc == 0)) || result=1
  elif ((kernels_rc == 77)); then
    torch_rows+=("| grpo_tests_torch_cuda_kernels | skipped: no CUDA device |")
  fi
  [[ -f "$torch_logs/torch_cuda_kernels_bench.log" ]] &&
    torch_bench_text=$(cat "$torch_logs/torch_cuda_kernels_bench.log")
  if ((rc == 77)); then
    torch_rows+=("| grpo_tests_torch_cuda | skipped: no CUDA device |")
  elif [[ -f "$torch_logs/torch_cuda_conformance.xml" ]]; then
    torch_rows+=("$(junit_summary "grpo_tests_torch_cuda" "$torch_logs/torch_cuda_conformance.xml" row 2>&1)")
    ((rc == 0)) || result=1
  fi
  if ((result != 0)); then
    echo "gpu-check: LibTorch test failures; see $torch_logs/torch_tests.log" >&2
    grep -B 5 -A 30 -m 3 "FAILED" "$torch_logs/torch_tests.log" >&2 || true
  fi
  return $result
}

# SmolLM2-135M-Instruct's weights for the smollm2, job and trl parts: sets model, reference and label (once).
model="" reference="" label=""
smollm2_model() {
  [[ -n "$model" ]] && return 0
  local work=$torch_build/smollm2
  ((dry_run)) || mkdir -p "$work"
  if [[ "$weights" != random && -n "${GRPO_SMOLLM2_DIR:-}" ]]; then
    model=$GRPO_SMOLLM2_DIR reference=fixture label="SmolLM2-135M-Instruct ($GRPO_SMOLLM2_DIR)"
  elif [[ "$weights" != random ]] && { gguf_ready || { ((dry_run)) && [[ "$weights" == gguf ]]; }; }; then
    model=$work/SmolLM2-135M-Instruct reference=fixture label="SmolLM2-135M-Instruct (Q4_1 GGUF, F32)"
    if [[ ! -f "$model/model.safetensors" ]]; then
      if ((dry_run)); then
        echo "+ cat $gguf_dir/smollm2-gguf.* >$work/SmolLM2-135M-Instruct.Q4_1.gguf"
      else
        cat "$gguf_dir"/smollm2-gguf.* >"$work/SmolLM2-135M-Instruct.Q4_1.gguf"
      fi
      run_logged "$torch_logs/convert.log" "$grpo_bin" convert-gguf --input "$work/SmolLM2-135M-Instruct.Q4_1.gguf" \
        --output "$model" || { cat "$torch_logs/convert.log" >&2; model=""; return 1; }
    fi
  elif [[ -f "$deps/smollm2/config.json" ]]; then
    model=$work/SmolLM2-135M-random reference=transformers
    label="SmolLM2-135M-Instruct's shape, random weights (transformers' init, seed 0)"
    if ((dry_run)); then
      echo "+ $python - $deps/smollm2 $model  (random weights: model.safetensors)"
    elif [[ ! -f "$model/model.safetensors" ]]; then
      "$python" - "$deps/smollm2" "$model" >"$torch_logs/random_model.log" 2>&1 <<'EOF' ||
import pathlib, shutil, sys
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM
skeleton, out = map(pathlib.Path, sys.argv[1:3])
out.mkdir(parents=True, exist_ok=True)
for f in skeleton.iterdir():
    if f.name != "gguf.sha256":
        shutil.copy(f, out / f.name)
torch.manual_seed(0)
config = AutoConfig.from_pretrained(out)
model = AutoModelForCausalLM.from_config(config).float()
# Tied embeddings are stored once, as `grpo convert-gguf` and transformers' save_pretrained store them.
state = {k: v.contiguous() for k, v in model.state_dict().items()
         if not (config.tie_word_embeddings and k == "lm_head.weight")}
save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
print(f"{sum(v.numel() for v in state.values())} parameters -> {out}")
EOF
        { cat "$torch_logs/random_model.log" >&2; model=""; return 1; }
    fi
  else
    echo "gpu-check: no SmolLM2 (GRPO_SMOLLM2_DIR, GGUF parts or .gpu-deps/smollm2): run cmake/gpu-deps.sh" >&2
    return 1
  fi
}

# SmolLM2-135M-Instruct on the policy: score against a reference, a short GRPO run.
smollm2_rows=()
smollm2_part() {
  local work=$torch_build/smollm2 result=0
  smollm2_model || return 1
  smollm2_rows=("| model | $label |")
  ((dry_run)) || mkdir -p "$torch_logs"

  # With real weights, the test case that compares them with the fixture on the CPU.
  if [[ "$reference" == fixture ]]; then
    if GRPO_SMOLLM2_DIR=$model run_logged "$torch_logs/smollm2_test.log" timeout 120 "$tbin/grpo_tests_torch" \
      "causal_lm: SmolLM2*"; then
      smollm2_rows+=("| SmolLM2 test case (CPU, fp32, fixture within 1e-4) | passed |")
    else
      smollm2_rows+=("| SmolLM2 test case (CPU, fp32, fixture within 1e-4) | FAILED: $torch_logs/smollm2_test.log |")
      result=1
    fi
  fi

  # Score: the fixture's prompts and completions, on the device and on the CPU.
  local fixture=$root/tests/data/hf/smollm2_fixture.json score_devices=("$device") d
  [[ "$device" != cpu ]] && score_devices+=(cpu)
  ((dry_run)) || "$python" -c 'import json, sys
for p in json.load(open(sys.argv[1]))["pairs"]:
    print(json.dumps({"prompt": p["prompt"], "completion": p["completion"]}))' "$fixture" >"$work/score_input.jsonl"
  for d in "${score_devices[@]}"; do
    run_logged "$torch_logs/score_$d.log" timeout 120 "$grpo_bin" score --policy torch --device "$d" --model "$model" \
      --input "$work/score_input.jsonl" --output "$torch_logs/score_$d.jsonl" ||
      { smollm2_rows+=("| score on $d | FAILED: $torch_logs/score_$d.log |"); result=1; }
  done
  if ((!dry_run)); then
    local compared
    compared=$("$python" - "$model" "$fixture" "$reference" "${score_devices[@]/#/$torch_logs/score_}" \
      2>"$torch_logs/compare.log" <<'EOF'
import json, pathlib, sys
model_dir, fixture_path, reference, *scored = sys.argv[1:]
pairs = json.load(open(fixture_path))["pairs"]
if reference == "fixture":
    ref_ids = [p["completion_ids"] for p in pairs]
    ref = [p["logprobs"] for p in pairs]
else:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    tok = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref_ids, ref = [], []
    for p in pairs:
        prompt = tok.encode(p["prompt"], add_special_tokens=False).ids
        completion = tok.encode(p["completion"], add_special_tokens=False).ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + completion])).logits[0].double(), -1)
        ref_ids.append(completion)
        ref.append([logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion)])
for path in scored:
    rows = [json.loads(line) for line in open(path + ".jsonl") if line.strip()]
    same = len(rows) == len(ref_ids) and all(r["completion_ids"] == ids for r, ids in zip(rows, ref_ids))
    diff = max(abs(a - b) for r, x in zip(rows, ref) for a, b in zip(r["logprobs"], x))
    print(f"{path.rsplit('_', 1)[1]}: {diff:.1e}{'' if same else ' (completion ids DIFFER)'}")
EOF
    ) || { compared="FAILED: $torch_logs/compare.log"; result=1; }
    local against="transformers fp32 here"
    [[ "$reference" == fixture ]] && against="the fixture (transformers fp32)"
    smollm2_rows+=("| score: max abs log-prob diff vs $against | $(paste -sd ';' <<<"$compared" | sed 's/;/; /g') |")
    grep -q DIFFER <<<"$compared" && result=1
  fi

  # GRPO: no cold start, a small held-out evaluation, TRL's default learning rate for a pretrained model.
  local run_dir=$work/run poller="" t0=$SECONDS set_args=() extra=() kv
  read -ra extra <<<"${GRPO_TRAIN_SET:-}"
  for kv in max_steps="$train_steps" sft.steps=0 eval.size=16 eval.num_samples=0 learning_rate=1e-6 \
    max_completion_length=64 "${extra[@]}"; do
    set_args+=(--set "$kv")
  done
  ((dry_run)) || rm -rf "$run_dir"
  if [[ "$device" != cpu ]] && ((!dry_run)); then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$torch_logs/gpu_memory.csv" 2>&1 &
    poller=$!
  fi
  local rc=0
  run_logged "$torch_logs/train.log" timeout "$train_timeout" "$grpo_bin" train --policy torch --device "$device" \
    --model "$model" --output-dir "$run_dir" "${set_args[@]}" || rc=$?
  # Cut at the time limit, the run is a measurement of the steps it finished, not a failure.
  if ((rc == 124)); then
    smollm2_rows+=("| GRPO run | stopped at GRPO_TRAIN_TIMEOUT=$train_timeout s |")
  elif ((rc != 0)); then
    smollm2_rows+=("| GRPO run | FAILED (exit $rc): $torch_logs/train.log |")
    result=1
  fi
  local wall=$((SECONDS - t0))
  [[ -n "$poller" ]] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null
  if ((!dry_run)) && [[ -f "$run_dir/metrics.jsonl" ]]; then
    smollm2_rows+=("$("$python" - "$run_dir/metrics.jsonl" "$torch_logs/gpu_memory.csv" "$wall" <<'EOF'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
steps = [r for r in records if "actor/loss" in r]
if not steps:
    sys.exit(print("| GRPO steps | none finished |"))
timed = steps[1:] if len(steps) > 1 else steps  # the first step pays for CUDA's and the allocator's warm-up
def mean(key):
    return statistics.fmean(r[key] for r in timed if r.get(key) is not None)
print(f"| GRPO steps {len(steps) - len(timed) + 1}-{len(steps)} of {len(steps)} "
      f"({steps[-1].get('kept_rows', 0):.0f} completions each) | "
      f"{len(timed) / sum(r['time/step_s'] for r in timed):.2f} steps/s |")
print(f"| generation (rollout tokens/s) | {mean('perf/rollout_tokens_per_s'):.0f} tokens/s, "
      f"mean length {mean('response_length/mean'):.1f} |")
print(f"| training (policy update tokens/s) | {mean('perf/train_tokens_per_s'):.0f} tokens/s |")
print(f"| reward (first -> last step) | {steps[0]['critic/score/mean']:.3f} -> {steps[-1]['critic/score/mean']:.3f} |")
try:
    used = [float(v) for v in open(sys.argv[2]).read().split() if v.replace(".", "").isdigit()]
    print(f"| peak GPU memory (nvidia-smi, whole device) | {max(used) / 1024:.2f} GiB "
          f"(at start {used[0] / 1024:.2f}) |")
except (OSError, ValueError):
    print("| peak GPU memory | n/a (no nvidia-smi samples) |")
print(f"| train wall time (load, 2 evaluations, steps, checkpoint) | {sys.argv[3]} s |")
EOF
    )") || result=1
  fi
  return $result
}

# The SmolLM2 GRPO job of examples/configs/r1_smollm2.toml end to end (cold start, GRPO, evaluations, save) with the
# weights smollm2_model finds, under nvidia-smi's memory sampling; bench/smollm2_report.py turns its metrics into the
# table (accuracy before and after, wall time, tokens/s, MFU, peak memory, the step's time split), and
# cmake/plot_metrics.py draws its learning curves into the logs.
job_rows=()
job_part() {
  local run_dir=$torch_build/smollm2/job poller="" rc=0 t0 wall set_args=() extra=() kv gpu_name=""
  smollm2_model || return 1
  job_rows=("| model | $label |")
  read -ra extra <<<"${GRPO_JOB_SET:-}"
  for kv in "${extra[@]}"; do set_args+=(--set "$kv"); done
  ((dry_run)) || rm -rf "$run_dir"
  if [[ "$device" != cpu ]] && ((!dry_run)); then
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$torch_logs/job_gpu_memory.csv" 2>&1 &
    poller=$!
  fi
  # The instruct model itself on the same held-out problems: issue 11's goal is measured from it.
  run_logged "$torch_logs/job_eval_instruct.log" timeout 120 "$grpo_bin" eval \
    --config "$root/examples/configs/r1_smollm2.toml" --model "$model" --device "$device" "${set_args[@]}" ||
    job_rows+=("| instruct model's evaluation | FAILED: $torch_logs/job_eval_instruct.log |")
  ((dry_run)) || job_rows+=("| held-out greedy accuracy of the instruct model (no training) | $(sed -n \
    's/^held-out: //p' "$torch_logs/job_eval_instruct.log" | sed 's/ | /, /g') |")
  t0=$SECONDS
  run_logged "$torch_logs/job.log" timeout "$job_timeout" "$grpo_bin" train --config "$root/examples/configs/r1_smollm2.toml" \
    --model "$model" --device "$device" --output-dir "$run_dir" "${set_args[@]}" || rc=$?
  wall=$((SECONDS - t0))
  [[ -n "$poller" ]] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null
  ((dry_run)) && return 0
  ((rc == 124)) && job_rows+=("| run | stopped at GRPO_JOB_TIMEOUT=$job_timeout s: the steps done by then are measured |")
  ((rc != 0 && rc != 124)) && job_rows+=("| run | FAILED (exit $rc): $torch_logs/job.log |")
  [[ -f "$run_dir/metrics.jsonl" ]] || { tail -n 30 "$torch_logs/job.log" >&2; return 1; }
  # The update-time estimate needs the prompts' length when the trainer records no time/update_s.
  local prompt_tokens
  prompt_tokens=$("$grpo_bin" prompts --config "$root/examples/configs/r1_smollm2.toml" --model "$model" --count 64 \
    --output "$torch_logs/job_prompts.jsonl" >/dev/null 2>&1 && "$python" -c 'import json, sys
rows = [len(json.loads(l)["prompt_ids"]) for l in open(sys.argv[1])]
print(sum(rows) / len(rows))' "$torch_logs/job_prompts.jsonl") || prompt_tokens=0
  local report_args=(--run "$run_dir" --log "$torch_logs/job.log" --wall "$wall" --gpu-name "$gpu_name"
    --mean-prompt-tokens "$prompt_tokens")
  [[ -n "$poller" ]] && report_args+=(--memory "$torch_logs/job_gpu_memory.csv")
  mapfile -t -O "${#job_rows[@]}" job_rows < <("$python" "$root/bench/smollm2_report.py" "${report_args[@]}" 2>&1)
  "$python" "$root/cmake/plot_metrics.py" "$run_dir/metrics.jsonl" "$torch_logs/r1_smollm2_curves.png" \
    >"$torch_logs/plot.log" 2>&1 && job_rows+=("| learning curves | $torch_logs/r1_smollm2_curves.png |")
  ((rc == 0 || rc == 124))
}

# grpo against TRL's GRPOTrainer (bench/trl_compare.py) on the job's settings, from the job's cold start (`grpo sft`
# with the same config), so that the first step's rewards differ within groups: the first step's loss and gradient
# norm on the same batch, then per-step wall time and peak memory of both. TRL comes from .gpu-deps/wheels when
# python3 lacks it; with GRPO_TRL_VLLM=1 and vLLM importable, TRL runs a second time generating with vLLM.
trl_text=""
trl_part() {
  local work=$torch_build/smollm2/trl sets=() extra=() kv site=$torch_build/trl-site rc=0
  smollm2_model || return 1
  if ((!dry_run)) && ! "$python" -c 'import trl' >/dev/null 2>&1; then
    [[ -d "$deps/wheels" ]] || { echo "gpu-check: no TRL in $python and no .gpu-deps/wheels: run cmake/gpu-deps.sh" >&2
      return 1; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --find-links "$deps/wheels" \
      --target "$site" trl datasets dill multiprocess >"$torch_logs/trl_install.log" 2>&1 ||
      { cat "$torch_logs/trl_install.log" >&2; return 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  read -ra extra <<<"${GRPO_TRL_SET:-}"
  for kv in eval.size=8 "${extra[@]}"; do sets+=(--set "$kv"); done
  ((dry_run)) || rm -rf "$work"
  run_logged "$torch_logs/trl_sft.log" "$grpo_bin" sft --config "$root/examples/configs/r1_smollm2.toml" --model "$model" \
    --device "$device" --output-dir "$work/sft" "${sets[@]}" || { tail -n 30 "$torch_logs/trl_sft.log" >&2; return 1; }
  local compare=("$python" "$root/bench/trl_compare.py" --grpo "$grpo_bin" --model "$work/sft/model" --device "$device"
    --steps "$trl_steps" --tolerance "${GRPO_TRL_TOLERANCE:-$([[ "$device" == cpu ]] && echo 1e-3 || echo 2e-2)}"
    --policies "${GRPO_TRL_POLICIES:-torch}" "${sets[@]}")
  run_logged "$torch_logs/trl_compare.log" timeout "$trl_timeout" "${compare[@]}" --work "$work/compare" \
    --json "$torch_logs/trl_compare.json" || rc=$?
  if [[ "${GRPO_TRL_VLLM:-0}" == 1 ]] && "$python" -c 'import vllm' >/dev/null 2>&1; then
    run_logged "$torch_logs/trl_compare_vllm.log" timeout "$trl_timeout" "${compare[@]}" --vllm --work "$work/vllm" \
      --json "$torch_logs/trl_compare_vllm.json" || rc=$?
  fi
  ((dry_run)) && return 0
  trl_text="grpo vs TRL on $device ($label; logs: $torch_logs/trl_compare*.log)"$'\n'
  trl_text+=$(sed -n '/^first step of TRL/,$p' "$torch_logs"/trl_compare*.log)
  if ((rc != 0)); then
    trl_text+=$'\n'"gpu-check: trl_compare exited with $rc (124: GRPO_TRL_TIMEOUT=$trl_timeout s)"$'\n'
    trl_text+=$(tail -n 20 "$torch_logs/trl_compare.log")
  fi
  return $rc
}

if has_part cccl; then cccl_part || status=1; fi
# A markdown table titled $1 of the rows after it; each part prints its own as soon as it ends.
print_table() {
  ((dry_run)) || printf '%s\n' "" "| $1 | result |" "| --- | --- |" "${@:2}"
}
if has_part torch || has_part smollm2 || has_part job || has_part trl || has_part build; then
  ((dry_run)) || printf '\n%s\n' "grpo LibTorch check on $device, $(date -u +%Y-%m-%dT%H:%MZ) (logs: $torch_logs)"
  if torch_setup; then
    if has_part torch; then torch_part || status=1; fi
    print_table LibTorch "${torch_rows[@]}"
    ((dry_run)) || [[ -z "${torch_bench_text:-}" ]] || printf '\n%s\n' "$torch_bench_text"
    if has_part smollm2; then
      smollm2_part || status=1
      print_table "SmolLM2 on $device" "${smollm2_rows[@]}"
    fi
    if has_part job; then
      job_part || status=1
      print_table "SmolLM2 GRPO job (examples/configs/r1_smollm2.toml) on $device" "${job_rows[@]}"
    fi
    if has_part trl; then
      trl_part || status=1
      ((dry_run)) || printf '\n%s\n' "${trl_text:-}"
    fi
  else
    status=1
    print_table LibTorch "${torch_rows[@]}"
  fi
fi
exit $status
