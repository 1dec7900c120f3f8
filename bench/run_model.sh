#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/run_model.sh: issue 4's model benchmark in one command. Builds grpo_bench_model (build/bench, Release,
# the configure flags of bench/run.sh), exports its seeded weights (safetensors + config.json), checks that the
# PyTorch-eager peer (bench/peer_model.py, Debian's /usr/bin/python3) computes the same logits, runs both sides
# on the same shapes and thread count, and prints one markdown table, one row per model size and case:
#   model size | case (generation at each batch size, train step) | tok/s ours | torch | ratio
# Generation batches (rows sampled together): 1 (1 prompt x 1 completion), 64 (8 prompts x 8 completions, the
# trainer's groups of 8) and 128 (16 x 8, the main job's step). Goals: ratio >= 2 on generation, >= 1.5 on the
# training step (issue 4); generation tok/s at batch 1 and 64 recorded (issue 14). Run it on a quiet machine: with
# other processes on the cores, torch's OpenMP threads (which spin while waiting) lose far more than our pool does.
# Environment: GRPO_BENCH_THREADS (default: nproc), GRPO_BENCH_SIZES (default: main,large),
# GRPO_BENCH_GEN_BATCHES (generation batch sizes among 1,64,128, or none for the train step only; default: all three),
# GRPO_BENCH_ISA (our kernels: generic, avx2 or avx512; default: the best the CPU runs),
# GRPO_BENCH_MIN_TIME (seconds per case and repetition, default 2), GRPO_BENCH_BUILD_DIR (default: build/bench).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${GRPO_BENCH_BUILD_DIR:-$root/build/bench}
threads=${GRPO_BENCH_THREADS:-$(nproc)}
sizes=${GRPO_BENCH_SIZES:-main,large}
gen_batches=${GRPO_BENCH_GEN_BATCHES:-1,64,128}
if [[ ! $gen_batches =~ ^((1|64|128)(,(1|64|128))*|none)$ ]]; then
  echo "run_model.sh: GRPO_BENCH_GEN_BATCHES: a comma-separated list of 1, 64 and 128, or none, got '$gen_batches'" >&2
  exit 2
fi
min_time=${GRPO_BENCH_MIN_TIME:-2}
python=/usr/bin/python3

generator=()
if [[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
echo "== configure and build grpo_bench_model in $build" >&2
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DGRPO_BUILD_BENCH=ON \
  -DGRPO_WITH_TORCH=ON -DGRPO_WITH_CUDA=ON \
  -DGRPO_BUILD_TESTS=OFF -DGRPO_BUILD_CLI=OFF >/dev/null
cmake --build "$build" --target grpo_bench_model >&2
bench=$build/bench/grpo_bench_model

data=$build/model_bench
rm -rf "$data"
mkdir -p "$data"
echo "== export weights to $data" >&2
"$bench" --export "$data" >&2

read -r load _ </proc/loadavg
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "WARNING: load average $load: other processes are running, the timings (torch's above all) are noisy" >&2
fi

size_pattern="($(tr ',' '|' <<<"$sizes"))"
filter="^(generate/$size_pattern/b($(tr ',' '|' <<<"$gen_batches"))|train_step/$size_pattern)/"
echo "== ours: $threads threads, sizes $sizes, generation batches $gen_batches" >&2
GRPO_BENCH_THREADS=$threads "$bench" --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_format=json >"$data/ours.json"
echo "== torch: $threads threads (logits checked first)" >&2
OMP_NUM_THREADS=$threads "$python" "$root/bench/peer_model.py" "$data" --sizes "$sizes" --threads "$threads" \
  --min-time "$min_time" --gen-batches "$gen_batches" >"$data/torch.jsonl"

"$python" - "$data" "$sizes" "$gen_batches" "$threads" <<'EOF'
import json
import os
import sys

data, sizes, gen_batches, threads = sys.argv[1:]
ours_path, torch_path = os.path.join(data, "ours.json"), os.path.join(data, "torch.jsonl")
batches = [] if gen_batches == "none" else [int(b) for b in gen_batches.split(",")]
ours, isa = {}, ""
for b in json.load(open(ours_path))["benchmarks"]:
    if b.get("aggregate_name") == "median":
        ours[b["run_name"].removesuffix("/real_time")] = b["tokens_per_second"]
        isa = ["generic", "avx2", "avx512"][round(b["isa"])]
theirs, blas, checks = {}, "", {}
for line in open(torch_path):
    r = json.loads(line)
    if "tokens_per_second" in r:
        theirs[r["case"]] = r["tokens_per_second"]
        blas = r["blas"]
    elif r["case"].startswith("check/"):
        checks[r["case"][6:]] = r["scaled_error"]


def cell(case):
    a, b = ours.get(case), theirs.get(case)
    if a is None or b is None:
        return "n/a | n/a | n/a"
    return f"{a:,.0f} | {b:,.0f} | {a / b:.2f}x"


print(f"\nThreads: {threads} (ours and torch). Our kernels: {isa}. torch BLAS: {blas}. Median of 3 runs each. "
      "Train step = forward + "
      "loss + backward, no optimizer; tokens/s counts generated tokens (generation) and fed tokens (train).\n")
print("| model size | case | tok/s ours | torch | ratio |")
print("|---|---|---:|---:|---:|")
for size in sizes.split(","):
    with open(os.path.join(data, size, "shapes.json")) as f:
        shapes = json.load(f)
    for g in shapes["generation"]:
        if g["rows"] in batches:
            case = f"generate/{size}/b{g['rows']}"
            print(f"| {size} | generation, batch {g['rows']} ({g['prompts']} x {g['group_size']}) | {cell(case)} |")
    print(f"| {size} | train step ({shapes['train_rows']} rows) | {cell('train_step/' + size)} |")
print("\nLogits check (max |ours - torch| / max |torch|): "
      + "; ".join(f"{k}: float64 {v['logits_double']:.1e}, float32 {v['logits_float']:.1e}" for k, v in checks.items()))
EOF
