#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch-eager peer of tests/cuda/gpu_bench.cu on the same GPU, shapes and dtypes, in the same run.

For logits [N, V] (N = 4096; V = 32768 and 151936; fp32 and bf16; temperature 0.9) it times, with CUDA events
(median of 20 calls after 3 warm-ups):
  logprob+entropy  log_softmax of z / T, the sampled token's log-prob and the entropy, then autograd of
                   sum(logprob) + sum(entropy) into the logits: what the fused softmax_stats + softmax_backward do.
  jsd              generalized JSD (beta 0.5) of student and teacher, autograd into the student logits: what the
                   fused divergence kernel does.
each two ways: `native` keeps the logits' dtype through log_softmax (what TRL's bf16 path does), `fp32` upcasts
first (the precision our kernels compute in). `--variants compile` times logprob+entropy through torch.compile
instead (Inductor fuses it into Triton kernels: the strongest PyTorch peer short of a hand-written kernel; it
compiles once per shape and dtype first); `--variants liger` times Liger-Kernel's fused cross-entropy (log-prob
only, T = 1) and JSD (after a torch log_softmax, which it needs) instead. With --ours FILE (gpu_bench's table) it prints, per row, our time and the
ratio torch / ours. Prints a markdown table; `--json` adds one JSON line per measurement.
"""

import argparse
import json
import math
import re
import statistics

import torch
import torch.nn.functional as F

INV_T = 1.0 / 0.9
JSD_BETA = 0.5


def time_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def logprob_entropy_loss(logits, ids, upcast):
    z = (logits.float() if upcast else logits) * INV_T
    logp_all = F.log_softmax(z, dim=-1)
    logprob = logp_all.gather(1, ids[:, None]).squeeze(1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logprob.sum() + entropy.sum()


def logprob_entropy_step(logits, ids, upcast, loss=logprob_entropy_loss):
    def step():
        logits.grad = None
        loss(logits, ids, upcast).backward()
    return step


def compiled_logprob_entropy_step(logits, ids, upcast):
    return logprob_entropy_step(logits, ids, upcast, torch.compile(logprob_entropy_loss, dynamic=False))


def liger_cross_entropy_step(logits, ids, upcast):
    """Liger's fused cross-entropy: the sampled token's log-prob (no entropy) and its gradient, written over the
    logits in the forward. No temperature argument, so it runs at T = 1 without a scaling pass (favouring it)."""
    from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction

    def step():
        logits.grad = None
        LigerCrossEntropyFunction.apply(logits, ids, None, -100, 0.0, 0.0, "sum")[0].backward()
    return step


def liger_jsd_step(student, teacher, upcast):
    """Liger's JSD takes log-probs: log_softmax of both in torch first, then its fused loss and gradient, then
    autograd back through the student's log_softmax (what a user of it on logits runs)."""
    from liger_kernel.ops.jsd import LigerJSDFunction

    def step():
        student.grad = None
        log_q = F.log_softmax(student * INV_T, dim=-1)
        with torch.no_grad():
            log_p = F.log_softmax(teacher * INV_T, dim=-1)
        LigerJSDFunction.apply(log_q, log_p, None, JSD_BETA).backward()
    return step


def jsd_step(student, teacher, upcast):
    def step():
        student.grad = None
        zs = (student.float() if upcast else student) * INV_T
        zt = (teacher.float() if upcast else teacher) * INV_T
        log_q = F.log_softmax(zs, dim=-1)
        log_p = F.log_softmax(zt, dim=-1)
        log_m = torch.logaddexp(log_p + math.log(JSD_BETA), log_q + math.log(1.0 - JSD_BETA))
        per_row = (JSD_BETA * log_p.exp() * (log_p - log_m) + (1.0 - JSD_BETA) * log_q.exp() * (log_q - log_m)).sum(-1)
        per_row.sum().backward()
    return step


def read_ours(path):
    """(kernel, dtype, V) -> microseconds from gpu_bench's markdown rows."""
    ours = {}
    row = re.compile(r"^\| ([^|]+?) \| (fp32|bf16) \| (\d+) x (\d+) \| ([0-9.]+) \|")
    with open(path) as f:
        for line in f:
            m = row.match(line)
            if m:
                ours[(m.group(1).split(" (")[0], m.group(2), int(m.group(4)))] = float(m.group(5))
    return ours


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", help="gpu_bench output to compare with")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--variants", choices=("eager", "compile", "liger"), default="eager",
                        help="eager: both cases in eager mode; compile: logprob+entropy through torch.compile; "
                             "liger: Liger-Kernel's fused cross-entropy and JSD")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("peer_torch_gpu: no CUDA device visible to torch")
    ours = read_ours(args.ours) if args.ours else {}
    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"torch {torch.__version__} ({args.variants}) on {torch.cuda.get_device_name(0)}, "
          f"N = {args.rows}, T = 0.9\n")
    print("| case | logits | V | torch (us) | torch computes in | grpo fused (us) | torch / grpo |")
    print("|---|---|---:|---:|---|---:|---:|")
    for vocab in (32768, 151936):
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            student = (8.0 * (2.0 * torch.rand(args.rows, vocab, generator=gen, device=device) - 1.0)).to(dtype)
            teacher = (8.0 * (2.0 * torch.rand(args.rows, vocab, generator=gen, device=device) - 1.0)).to(dtype)
            student.requires_grad_()
            ids = torch.randint(0, vocab, (args.rows,), generator=gen, device=device)
            stats = ("softmax_stats", "softmax_backward")
            if args.variants == "eager":
                cases = [("logprob+entropy", stats, logprob_entropy_step, (student, ids)),
                         ("jsd", ("divergence",), jsd_step, (student, teacher))]
            elif args.variants == "compile":
                cases = [("logprob+entropy, torch.compile", stats, compiled_logprob_entropy_step, (student, ids))]
            else:
                cases = [("logprob only (cross-entropy, T = 1), Liger", stats, liger_cross_entropy_step,
                          (student, ids)),
                         ("jsd, Liger", ("divergence",), liger_jsd_step, (student, teacher))]
            for case, kernels, make, inputs in cases:
                for upcast in ((False, True) if dtype != torch.float32 and args.variants != "liger" else (False,)):
                    ms = time_ms(make(*inputs, upcast))
                    us = ms * 1e3
                    mine = [ours.get((k, name, vocab)) for k in kernels]
                    have = all(t is not None for t in mine)
                    total = sum(mine) if have else None
                    ratio = f"{us / total:.1f}x" if have else "-"
                    print(f"| {case} | {name} | {vocab} | {us:.0f} | {'fp32' if upcast or args.variants == 'liger' else name}"
                          f" | {f'{total:.0f}' if have else '-'} | {ratio} |")
                    if args.json:
                        print(json.dumps({"case": case, "dtype": name, "vocab": vocab, "rows": args.rows,
                                          "upcast": upcast, "torch_us": us, "grpo_us": total}))
            del student, teacher, ids
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
