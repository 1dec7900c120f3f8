#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# bench/smollm2_report.py: the measurements of one `grpo train` run (the SmolLM2 GRPO job of
# examples/configs/r1_smollm2.toml, run by cmake/gpu-check.sh's `job` part) as markdown table rows:
# held-out greedy accuracy before and after GRPO (the train log's last two lines), wall time, generation and training
# tokens per second, model FLOPs utilization, peak GPU memory and the time split of a GRPO step.
#   python3 bench/smollm2_report.py --run RUN_DIR --log train.log --wall SECONDS [--memory nvidia-smi.csv]
#                                   [--gpu-name NAME] [--parameters N] [--mean-prompt-tokens N]
# MFU = 6 * N * (training tokens per second) / peak dense bf16 FLOP/s of the card (6N: forward 2N + backward 4N per
# token, Kaplan et al. 2020, arXiv:2001.08361, Sec. 2.1; attention's FLOPs left out, as is usual for short sequences).
# Peaks (dense bf16, NVIDIA's data sheets): H100 SXM and H200 989.4 TFLOP/s, H100 NVL 835, H100 PCIe 756.
# The step's time split uses metrics.jsonl: time/step_s (the whole step), the rollout's sampling time
# (time/rollout_s, else rows * response_length/mean / perf/rollout_tokens_per_s: the same), the update's time (time/update_s when the trainer
# records it, else train tokens / perf/train_tokens_per_s with the train tokens estimated as kept_rows *
# (mean prompt tokens + response_length/mean - 1), marked "est."), and the rest (reward scoring, advantages, batching).
import argparse
import json
import re
import statistics
import sys

PEAKS_TFLOPS = [("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4)]


def peak_for(name):
    for key, tflops in PEAKS_TFLOPS:
        if key.lower() in (name or "").lower():
            return key, tflops
    return None, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--wall", type=float, required=True)
    ap.add_argument("--memory", help="nvidia-smi memory.used samples in MiB, one a line")
    ap.add_argument("--gpu-name", default="")
    ap.add_argument("--parameters", type=float, default=134515008, help="SmolLM2-135M: 134,515,008 (tied embedding)")
    ap.add_argument("--mean-prompt-tokens", type=float, default=0,
                    help="for the update-time estimate when metrics.jsonl lacks time/update_s")
    args = ap.parse_args()

    log = open(args.log, encoding="utf-8", errors="replace").read()
    before = re.search(r"held-out accuracy after cold start: (.*)", log)
    after = re.search(r"held-out accuracy after GRPO: *(.*)", log)
    cell = lambda m, missing: m.group(1).strip().replace(" | ", ", ") if m else missing
    print(f"| held-out greedy accuracy after the cold start (before GRPO) | {cell(before, 'n/a')} |")
    print(f"| held-out greedy accuracy after GRPO | {cell(after, 'n/a (the run did not finish)')} |")
    print(f"| wall time of `grpo train` (load, cold start, 2 evaluations, GRPO, save) | {args.wall:.0f} s |")

    records = [json.loads(line) for line in open(f"{args.run}/metrics.jsonl") if line.strip()]
    sft = [r for r in records if "sft/loss" in r]
    steps = [r for r in records if "actor/loss" in r]
    if sft:
        print(f"| cold start | {len(sft)} steps, {sum(r['time/step_s'] for r in sft):.1f} s, SFT loss "
              f"{sft[0]['sft/loss']:.3f} -> {sft[-1]['sft/loss']:.3f} |")
    if not steps:
        print("| GRPO steps | none finished |")
        return 0
    timed = steps[1:] if len(steps) > 1 else steps  # the first pays for CUDA's and the allocator's warm-up
    step_s = statistics.fmean(r["time/step_s"] for r in timed)
    print(f"| GRPO steps | {len(steps)}, {sum(r['time/step_s'] for r in steps):.1f} s; mean step {step_s:.3f} s "
          f"(steps 2-{len(steps)}) |")
    print(f"| reward (first -> last 10 steps' mean) | {steps[0]['critic/score/mean']:.3f} -> "
          f"{statistics.fmean(r['critic/score/mean'] for r in steps[-10:]):.3f}; training accuracy "
          f"{steps[0]['accuracy']:.3f} -> {statistics.fmean(r['accuracy'] for r in steps[-10:]):.3f} |")

    gen_tps = statistics.fmean(r["perf/rollout_tokens_per_s"] for r in timed)
    train_tps = statistics.fmean(r["perf/train_tokens_per_s"] for r in timed)
    print(f"| generation | {gen_tps:.0f} tokens/s (sampled completion tokens), mean completion "
          f"{statistics.fmean(r['response_length/mean'] for r in timed):.1f} tokens |")
    print(f"| training (policy update) | {train_tps:.0f} tokens/s (prompt + completion tokens fed) |")
    card, peak = peak_for(args.gpu_name)
    if peak:
        mfu = 6 * args.parameters * train_tps / (peak * 1e12)
        gen_mfu = 2 * args.parameters * gen_tps / (peak * 1e12)
        print(f"| model FLOPs utilization | training {100 * mfu:.2f}% (6N x tokens/s over {card}'s {peak} TFLOP/s "
              f"dense bf16, N = {args.parameters:.0f}); generation {100 * gen_mfu:.3f}% (2N x tokens/s) |")
    else:
        print(f"| model FLOPs utilization | n/a (no peak known for '{args.gpu_name or 'this device'}'); "
              f"6N x training tokens/s = {6 * args.parameters * train_tps / 1e12:.2f} TFLOP/s |")
    if args.memory:
        try:
            used = [float(v) for v in open(args.memory).read().split() if re.fullmatch(r"[0-9.]+", v)]
            print(f"| peak GPU memory (nvidia-smi, whole device, 200 ms samples) | {max(used) / 1024:.2f} GiB "
                  f"(idle before the run {used[0] / 1024:.2f} GiB) |")
        except (OSError, ValueError):
            print("| peak GPU memory | n/a (no nvidia-smi samples) |")

    # Every sampled row is kept without dynamic sampling (the job's setting), so kept_rows counts the completions.
    gen = [r.get("time/rollout_s", r["kept_rows"] * r["response_length/mean"] / r["perf/rollout_tokens_per_s"])
           for r in timed]
    if all("time/update_s" in r for r in timed):
        update, mark = [r["time/update_s"] for r in timed], ""
    else:
        update = [r["kept_rows"] * (args.mean_prompt_tokens + r["response_length/mean"] - 1) / r["perf/train_tokens_per_s"]
                  if r["perf/train_tokens_per_s"] > 0 else 0.0 for r in timed]
        mark = " (est.)"
    g, u = statistics.fmean(gen), statistics.fmean(update)
    rest = step_s - g - u
    print(f"| GRPO step time split (mean of steps 2-{len(steps)}) | generation {g:.3f} s ({100 * g / step_s:.0f}%), "
          f"update{mark} {u:.3f} s ({100 * u / step_s:.0f}%), scoring and the rest {rest:.3f} s "
          f"({100 * rest / step_s:.0f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
