#!/usr/bin/env bash
# Installs what grpo's build, tests and CLI need on a fresh Debian 12 machine (run as root, or
# with sudo available). Safe to run again: it skips packages already present.
#   bash cmake/debian-deps.sh              the core, the CLI and the training job
#   bash cmake/debian-deps.sh --backends   also the backends' dependencies (LibTorch with OpenBLAS, Thrust, Open MPI), Google Benchmark
#                                          and Clang with libFuzzer (the sanitizer and fuzz tests)
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config catch2 libcli11-dev libpcre2-dev libutf8proc-dev python3 python3-numpy python3-venv python3-matplotlib)
if [[ "${1:-}" == "--backends" ]]; then
  # OpenBLAS becomes the libblas.so.3 alternative that Debian's torch loads (about 30x the reference BLAS).
  packages+=(libtorch-dev libthrust-dev libcub-dev libbenchmark-dev libopenblas0-pthread openmpi-bin libopenmpi-dev)
  # The ci preset's sanitizer and fuzz tests (tests/fuzz): Clang, and libFuzzer with the sanitizer runtimes
  # (libclang_rt.fuzzer, .asan, .ubsan), which clang-14 only recommends.
  packages+=(clang libclang-rt-14-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The interop test drives the CLI from Python with numpy. Debian's python3-numpy serves
# /usr/bin/python3; a python3 earlier on PATH (pyenv, venv) gets numpy from PyPI.
if ! python3 -c "import numpy" 2>/dev/null; then
  python3 -m pip install --quiet numpy || echo "note: numpy unavailable for $(command -v python3); the interop test will be skipped"
fi

# Conan 2 (for the packaging test) lives in its own virtual environment, away from the system's
# Python; CMake finds it there.
tools="${HOME}/.cache/grpo-tools"
if [[ ! -x "${tools}/bin/conan" ]]; then
  python3 -m venv "${tools}" && "${tools}/bin/pip" install --quiet "conan>=2,<3" ||
    echo "note: conan could not be installed; the Conan packaging test will not be registered"
fi
