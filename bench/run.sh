#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/run.sh: builds the loss benchmarks (bench/losses_bench.cpp) for every backend that builds here, runs each
# case of each backend and of the PyTorch-eager peer (bench/peer_torch.py, plain and TRL-style) in its own process,
# reading the child's peak RSS (ru_maxrss from wait4), and prints one markdown table.
#
#   bench/run.sh [--quick] [--threads N] [--repetitions R] [--cases "c1 c2"] [--backends "omp libtorch reference"]
#                [--no-build] [--json FILE]
#
#   --quick        small shapes, a smoke run of about a minute
#   --threads N    OMP_NUM_THREADS of our binaries and torch.set_num_threads of the peer (default: nproc)
#   --repetitions  timed repetitions per case; medians are reported (default 3, quick 2)
#   --cases        subset of: grpo_logprobs grpo_logits_v32k grpo_logits_v152k advantages_64x8 advantages_4096x16
#                  jsd_v32k topk_kl_v32k sft_v32k
#   --backends     subset of our backends (default: every one built: omp libtorch reference)
#   --no-build     reuse the build in $GRPO_BENCH_BUILD_DIR (default build/bench)
#   --json FILE    also write every measurement as JSON lines
# Environment: GRPO_BENCH_BUILD_DIR (default build/bench), GRPO_BENCH_PYTHON (default /usr/bin/python3, Debian's
# python3-torch). Timings need a quiet machine: with other processes on the cores, every OpenMP barrier waits for a
# descheduled thread and the small cases of the omp and libtorch backends slow down by 10-100x.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GRPO_BENCH_BUILD_DIR:-$root/build/bench}
python=${GRPO_BENCH_PYTHON:-/usr/bin/python3}
threads=$(nproc)
quick=0
repetitions=""
cases=""
backends=""
do_build=1
json_out=""

while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --threads) threads=$2; shift ;;
    --repetitions) repetitions=$2; shift ;;
    --cases) cases=$2; shift ;;
    --backends) backends=$2; shift ;;
    --no-build) do_build=0 ;;
    --json) json_out=$2; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $repetitions ]] || repetitions=$((quick ? 2 : 3))

if ((do_build)); then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  mkdir -p "$build"
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DGRPO_WITH_TORCH=ON -DGRPO_WITH_CUDA=ON -DGRPO_BUILD_CUDA_KERNELS=OFF -DGRPO_BUILD_BENCH=ON \
    -DGRPO_BUILD_TESTS=OFF -DGRPO_BUILD_CLI=OFF >"$build/grpo_bench_configure.log" 2>&1 ||
    { cat "$build/grpo_bench_configure.log" >&2; exit 1; }
  cmake --build "$build" --target grpo_bench_losses >&2
fi

export GRPO_BENCH_ROOT=$root GRPO_BENCH_DIR=$build/bench GRPO_BENCH_PY=$python GRPO_BENCH_THREADS=$threads
export GRPO_BENCH_QUICK_MODE=$quick GRPO_BENCH_REPS=$repetitions GRPO_BENCH_CASES=$cases
export GRPO_BENCH_BACKENDS=$backends GRPO_BENCH_JSON=$json_out
exec "$python" - <<'PY'
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

env = os.environ
root, bench_dir, python = env["GRPO_BENCH_ROOT"], env["GRPO_BENCH_DIR"], env["GRPO_BENCH_PY"]
threads, quick, reps = int(env["GRPO_BENCH_THREADS"]), env["GRPO_BENCH_QUICK_MODE"] == "1", int(env["GRPO_BENCH_REPS"])
all_cases = ["grpo_logprobs", "grpo_logits_v32k", "grpo_logits_v152k", "advantages_64x8", "advantages_4096x16",
             "jsd_v32k", "topk_kl_v32k", "sft_v32k"]
cases = env["GRPO_BENCH_CASES"].split() or all_cases
binaries = {"omp": "grpo_bench_losses_cccl_omp", "libtorch": "grpo_bench_losses_libtorch",
            "reference": "grpo_bench_losses_reference"}
wanted = env["GRPO_BENCH_BACKENDS"].split() or list(binaries)
backends = [b for b in wanted if os.access(os.path.join(bench_dir, binaries[b]), os.X_OK)]
for b in set(wanted) - set(backends):
    print(f"run.sh: backend {b} was not built ({binaries[b]} missing); skipped", file=sys.stderr)
child_env = dict(env, OMP_NUM_THREADS=str(threads))
records = []


def run_child(argv):
    """Runs argv to completion; returns (exit status, stdout, stderr, peak RSS in MiB of that child alone)."""
    # Output goes to files and the child is reaped by wait4 itself (not Popen.wait), whose rusage is that child's.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), usage.ru_maxrss / 1024.0


def failure(code, err):
    lines = [l for l in err.strip().splitlines() if l.strip()]
    why = f"signal {-code}" if code < 0 else f"exit {code}"
    return why + (f": {lines[-1][:120]}" if lines else "")


def ours(case, backend):
    argv = [os.path.join(bench_dir, binaries[backend]), f"--benchmark_filter=^{case}/",
            "--benchmark_format=json", f"--benchmark_repetitions={reps}", "--benchmark_report_aggregates_only=true"]
    if quick:
        argv.append("--quick")
    code, out, err, peak = run_child(argv)
    rec = {"case": case, "impl": backend, "peak_rss_mib": peak}
    try:  # a case that threw exits 1 after writing its error into the JSON
        runs = json.loads(out)["benchmarks"]
    except (ValueError, KeyError):
        runs = None
    if code != 0 and not any(r.get("error_occurred") for r in runs or []):
        rec["error"] = failure(code, err)
        return rec
    if not runs:
        rec["error"] = "no benchmark output"
        return rec
    if any(r.get("error_occurred") for r in runs):
        rec["error"] = next(r.get("error_message", "error") for r in runs if r.get("error_occurred"))
        return rec
    medians = [r for r in runs if r.get("aggregate_name") == "median"] or runs
    r = medians[0]
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[r.get("time_unit", "ns")]
    rec.update(median_s=r["real_time"] * scale, input_mib=r.get("input_MiB"), shape=r.get("label", ""),
               tokens_per_second=r.get("tokens_per_second"), bytes_per_second=r.get("bytes_per_second"))
    return rec


def peer(case, impl):
    argv = [python, os.path.join(root, "bench", "peer_torch.py"), "--case", case, "--impl", impl,
            "--threads", str(threads), "--repeats", str(reps)]
    if quick:
        argv.append("--quick")
    code, out, err, peak = run_child(argv)
    if "WARNING" in err:
        sys.stderr.write(err)
    rec = {"case": case, "impl": "torch_" + impl, "peak_rss_mib": peak}
    if code != 0:
        rec["error"] = failure(code, err)
        return rec
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    data = json.loads(line)
    rec.update(median_s=data["median_s"], input_mib=data["input_mib"], shape=data["shape"],
               baseline_rss_mib=data["baseline_rss_mib"], blas=data["blas"])
    return rec


for case in cases:
    for backend in backends:
        records.append(ours(case, backend))
        print(f"  {case} {backend}: {records[-1].get('median_s', records[-1].get('error'))}", file=sys.stderr)
    for impl in ("plain", "trl"):
        records.append(peer(case, impl))
        print(f"  {case} torch {impl}: {records[-1].get('median_s', records[-1].get('error'))}", file=sys.stderr)

if env["GRPO_BENCH_JSON"]:
    with open(env["GRPO_BENCH_JSON"], "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def fmt_time(s):
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def cell(r):
    if r is None:
        return "n/a"
    if "error" in r:
        return f"failed ({r['error']})"
    return f"{fmt_time(r['median_s'])}, {r['peak_rss_mib']:.0f} MiB"


def find(case, impl):
    return next((r for r in records if r["case"] == case and r["impl"] == impl), None)


try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
except OSError:
    commit = "unknown"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
mem = next((int(l.split()[1]) / 2**20 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
blas = next((r["blas"] for r in records if r.get("blas")), "unknown")
print(f"\n- Date: {datetime.datetime.now().isoformat(timespec='minutes')}. Machine: {cpu}, {os.cpu_count()} cores, "
      f"{mem:.0f} GiB. Commit {commit}.")
print(f"- Command: `bench/run.sh{' --quick' if quick else ''} --threads {threads} --repetitions {reps}`; shapes "
      f"{'quick' if quick else 'full'}; {threads} threads (OMP_NUM_THREADS, torch.set_num_threads); medians of {reps}.")
print(f"- torch {subprocess.run([python, '-c', 'import torch; print(torch.__version__)'], capture_output=True, text=True).stdout.strip()}"
      f", BLAS: {blas}.")
print("- Peak = ru_maxrss of the case's own process (Linux carries the ~10 MiB of the forking driver over exec), "
      "nothing subtracted; torch's import alone is given below the table. Input = the case's input tensors (the "
      "logits for the logits cases; student and teacher for JSD; the student for top-k KL).\n")
print("| case | shape | input MiB | ours (backend): time, peak | torch plain | torch TRL-style | speed-up vs best torch "
      "| memory ratio (ours / lowest torch peak) |")
print("|---|---|---|---|---|---|---|---|")
for case in cases:
    plain, trl = find(case, "torch_plain"), find(case, "torch_trl")
    torch_ok = [r for r in (plain, trl) if r and "error" not in r]
    best_time = min((r["median_s"] for r in torch_ok), default=None)
    low_peak = min((r["peak_rss_mib"] for r in torch_ok), default=None)
    for backend in backends:
        r = find(case, backend)
        shape = next((x.get("shape") for x in (r, plain, trl) if x and x.get("shape")), "")
        input_mib = next((x.get("input_mib") for x in (r, plain, trl) if x and x.get("input_mib") is not None), None)
        size = f"{input_mib:.4g}" if input_mib is not None else "n/a"
        ok = r and "error" not in r
        speedup = f"{best_time / r['median_s']:.2f}x" if ok and best_time else "n/a"
        ratio = f"{r['peak_rss_mib'] / low_peak:.2f}" if ok and low_peak else "n/a"
        print(f"| {case} | {shape} | {size} | {backend}: {cell(r)} | {cell(plain)} | {cell(trl)} | {speedup} | {ratio} |")
baseline = next((r["baseline_rss_mib"] for r in records if r.get("baseline_rss_mib")), None)
if baseline:
    print(f"\ntorch's own footprint after `import torch` (in every torch peak above): {baseline:.0f} MiB.")
PY
