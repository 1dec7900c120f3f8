#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch-eager peer of bench/losses_bench.cpp: the same cases on the same shapes, computed two ways.

  trl    the way TRL computes them: log-probs by its selective log-softmax for fp32 (a Python loop over the
         sequences, logsumexp of each [T, V] slice, minus the gathered logit), entropies under no_grad in chunks of
         rows, then GRPO's per-token loss (clip 0.2, k3 KL with beta 0.04, dapo token-mean), then autograd;
         advantages by nanmean / Bessel nanstd per group broadcast with repeat_interleave; JSD by log_softmax of
         both models, a stacked logsumexp for the mixture and kl_div with log targets (GKD's generalized JSD);
         top-k KL with the teacher made dense (its K probabilities scattered into a zero [N, V] tensor) and kl_div,
         as a dense-teacher loss is usually fed; SFT as Hugging Face's causal-LM loss (cross_entropy with
         ignore_index -100, summed and divided by the number of target tokens).
  plain  the textbook way: log_softmax + gather (entropy from the same log-softmax), the same loss; group
         statistics with keepdim broadcasting; JSD with logaddexp for the mixture; top-k KL from log_softmax gathered at
         the teacher's ids; SFT as log_softmax + gather.

Every case runs forward and backward (autograd of the loss into the differentiable input: log-probs, logits, or
student logits); advantages are forward only, as in the trainers. Inputs are seeded and drawn like the C++ bench's
(logits ~ 2 N(0, 1), completion lengths uniform in [T/4, T], old/ref log-probs = current + N(0, 0.05^2) /
N(0, 0.1^2)), not bit-identical to them. One JSON line per (case, impl) on stdout:
  {"case", "impl", "median_s", "times_s", "peak_rss_mib", "baseline_rss_mib", "input_mib", "threads", "shape", "blas"}
peak_rss_mib is this process's ru_maxrss (nothing subtracted; baseline_rss_mib is the RSS after importing torch).
Run one case and one impl per process (--case, --impl) to get that case's own peak; bench/run.sh does.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

BETA_KL = 0.04
EPSILON = 0.2
JSD_BETA = 0.5


def shapes(quick):
    """The C++ bench's shapes (bench/losses_bench.cpp register_cases)."""
    prompts, seq = (8, 256) if quick else (64, 1024)
    logit_batch, logit_seq = (2, 128) if quick else (4, 1024)
    v32, v152 = (8192, 32768) if quick else (32768, 151936)
    return {
        "grpo_logprobs": dict(rows=prompts * 8, seq=seq),
        "grpo_logits_v32k": dict(batch=logit_batch, seq=logit_seq, vocab=v32),
        "grpo_logits_v152k": dict(batch=logit_batch, seq=logit_seq, vocab=v152),
        "advantages_64x8": dict(prompts=64, group=8),
        "advantages_4096x16": dict(prompts=512 if quick else 4096, group=16),
        "jsd_v32k": dict(rows=logit_batch * logit_seq, vocab=v32),
        "topk_kl_v32k": dict(rows=logit_batch * logit_seq, vocab=v32, k=64),
        "sft_v32k": dict(rows=logit_batch * logit_seq, vocab=v32),
    }


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def blas_library():
    """The BLAS shared object torch actually loaded (Debian's torch reaches it through the libblas.so.3
    alternative), found in /proc/self/maps after a matrix product."""
    a = torch.ones(64, 64)
    (a @ a).sum().item()
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.split() else ""
                if "blas" in os.path.basename(path).lower():
                    found.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(found)


def check_blas():
    libs = blas_library()
    config = torch.__config__.show()
    ok = any("openblas" in lib.lower() for lib in libs) or "BLAS_INFO=mkl" in config
    if not ok:
        bar = "!" * 100
        print(f"{bar}\nWARNING: torch is not using OpenBLAS (loaded BLAS: {libs or 'none found'}).\n"
              "Its matrix products then run on the reference BLAS, many times slower. Install libopenblas0-pthread\n"
              "and make it the libblas.so.3 alternative (update-alternatives --config libblas.so.3-x86_64-linux-gnu).\n"
              f"{bar}", file=sys.stderr)
    return ",".join(libs) if libs else "unknown"


# ---- inputs ------------------------------------------------------------------------------------------------------

def completion_mask(rows, cols, gen):
    shortest = max(cols // 4, 1)
    lengths = torch.randint(shortest, cols + 1, (rows,), generator=gen)
    return (torch.arange(cols).unsqueeze(0) < lengths.unsqueeze(1)).float()


def normal_logits(rows, vocab, gen):
    """[rows, vocab] ~ 2 N(0, 1), filled in place (no second N x V buffer during setup)."""
    z = torch.empty(rows, vocab)
    z.normal_(0.0, 2.0, generator=gen)
    return z


@torch.no_grad()
def current_logprobs(logits, ids, chunk=256):
    out = torch.empty(logits.shape[0])
    for r0 in range(0, logits.shape[0], chunk):
        z = logits[r0:r0 + chunk]
        out[r0:r0 + chunk] = z.gather(1, ids[r0:r0 + chunk, None]).squeeze(1) - torch.logsumexp(z, dim=1)
    return out


# ---- the two implementations ---------------------------------------------------------------------------------------

def grpo_token_loss(logp, old, ref, adv, mask):
    """GRPO per-token loss as TRL writes it (clip, k3 KL, token-mean over the batch's valid tokens)."""
    delta = ref - logp
    kl = torch.exp(delta) - delta - 1.0
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1.0 - EPSILON, 1.0 + EPSILON)
    a = adv.unsqueeze(1)
    per_token = -torch.min(ratio * a, clipped * a) + BETA_KL * kl
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def trl_logprobs(logits3, ids2):
    """Selective log-softmax, fp32 branch: gather the sampled logit, subtract a logsumexp computed sequence by
    sequence in a Python loop (bounding the temporaries to one [T, V] slice)."""
    picked = torch.gather(logits3, -1, ids2.unsqueeze(-1)).squeeze(-1)
    lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits3])
    return picked - lse


@torch.no_grad()
def trl_entropy(logits2, chunk=128):
    parts = []
    for z in logits2.split(chunk, dim=0):
        logp = F.log_softmax(z, dim=-1)
        parts.append(-(torch.exp(logp) * logp).sum(-1))
    return torch.cat(parts)


def plain_logprobs(logits2, ids):
    logp_all = F.log_softmax(logits2, dim=-1)
    with torch.no_grad():
        detached = logp_all.detach()
        entropy = -(detached.exp() * detached).sum(-1)
    return logp_all.gather(1, ids[:, None]).squeeze(1), entropy


def trl_advantages(rewards, group):
    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1)
    count = (~torch.isnan(grouped)).sum(dim=1)
    var = torch.nanmean((grouped - mean.unsqueeze(1)) ** 2, dim=1) * count / (count - 1)
    std = torch.sqrt(var)
    mean = mean.repeat_interleave(group, dim=0)
    std = std.repeat_interleave(group, dim=0)
    return torch.nan_to_num((rewards - mean) / (std + 1e-4), nan=0.0)


def plain_advantages(rewards, group):
    grouped = rewards.view(-1, group)
    return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)


def trl_jsd(student, teacher):
    log_q = F.log_softmax(student, dim=-1)
    log_p = F.log_softmax(teacher, dim=-1)
    beta = torch.tensor(JSD_BETA, dtype=student.dtype)
    log_m = torch.logsumexp(torch.stack([log_q + torch.log(1 - beta), log_p + torch.log(beta)]), dim=0)
    kl_teacher = F.kl_div(log_m, log_p, reduction="none", log_target=True)
    kl_student = F.kl_div(log_m, log_q, reduction="none", log_target=True)
    divergence = beta * kl_teacher + (1 - beta) * kl_student
    return divergence.sum() / divergence.size(0)


def plain_jsd(student, teacher):
    log_q = F.log_softmax(student, dim=-1)
    log_p = F.log_softmax(teacher, dim=-1)
    log_m = torch.logaddexp(log_p + math.log(JSD_BETA), log_q + math.log(1.0 - JSD_BETA))
    per_row = (JSD_BETA * log_p.exp() * (log_p - log_m) + (1.0 - JSD_BETA) * log_q.exp() * (log_q - log_m)).sum(-1)
    return per_row.sum() / student.shape[0]


# ---- cases: each returns (step, input_bytes, shape label); step() runs one forward + backward ------------------------

def case_grpo_logprobs(impl, gen, rows, seq):
    logp = (torch.randn(rows, seq, generator=gen) * 0.5 - 1.0).requires_grad_()
    old = logp.detach() + 0.05 * torch.randn(rows, seq, generator=gen)
    ref = logp.detach() + 0.1 * torch.randn(rows, seq, generator=gen)
    adv = torch.randn(rows, generator=gen)
    mask = completion_mask(rows, seq, gen)

    def step():
        logp.grad = None
        grpo_token_loss(logp, old, ref, adv, mask).backward()
        return logp.grad

    return step, 4 * 4 * rows * seq, f"B*G={rows} T={seq}"


def case_grpo_logits(impl, gen, batch, seq, vocab):
    n = batch * seq
    logits = normal_logits(n, vocab, gen).requires_grad_()
    ids = torch.randint(0, vocab, (n,), generator=gen)
    current = current_logprobs(logits.detach(), ids).view(batch, seq)
    old = current + 0.05 * torch.randn(batch, seq, generator=gen)
    ref = current + 0.1 * torch.randn(batch, seq, generator=gen)
    adv = torch.randn(batch, generator=gen)
    mask = completion_mask(batch, seq, gen)

    def step():
        logits.grad = None
        if impl == "trl":
            logp = trl_logprobs(logits.view(batch, seq, vocab), ids.view(batch, seq))
            entropy = trl_entropy(logits.detach())
        else:
            logp, entropy = plain_logprobs(logits, ids)
            logp = logp.view(batch, seq)
        loss = grpo_token_loss(logp, old, ref, adv, mask)
        loss.backward()
        (entropy.view(batch, seq) * mask).sum().item()  # the entropy metric, as the trainers log it
        return logits.grad

    return step, 4 * n * vocab, f"N={n} V={vocab}"


def case_advantages(impl, gen, prompts, group):
    rewards = torch.randn(prompts * group, generator=gen)
    fn = trl_advantages if impl == "trl" else plain_advantages

    def step():
        return fn(rewards, group)

    return step, 4 * prompts * group, f"prompts={prompts} G={group}"


def case_jsd(impl, gen, rows, vocab):
    student = normal_logits(rows, vocab, gen).requires_grad_()
    teacher = normal_logits(rows, vocab, gen)
    fn = trl_jsd if impl == "trl" else plain_jsd

    def step():
        student.grad = None
        fn(student, teacher).backward()
        return student.grad

    return step, 2 * 4 * rows * vocab, f"N={rows} V={vocab}"


def case_topk_kl(impl, gen, rows, vocab, k):
    student = normal_logits(rows, vocab, gen).requires_grad_()
    first = torch.randint(0, vocab, (rows, 1), generator=gen)
    ids = (first + 509 * torch.arange(k).unsqueeze(0)) % vocab  # distinct: an odd stride, a power-of-two vocabulary
    logp = 2.0 * torch.randn(rows, k, generator=gen)
    logp = logp - torch.log(logp.exp().sum(1, keepdim=True) / 0.9)  # the top K hold 90% of the mass
    p = logp.exp()

    def step():
        student.grad = None
        log_q = F.log_softmax(student, dim=-1)
        if impl == "trl":
            dense = torch.zeros(rows, vocab).scatter_(1, ids, p)
            loss = F.kl_div(log_q, dense, reduction="sum") / rows
        else:
            loss = (p * (logp - log_q.gather(1, ids))).sum() / rows
        loss.backward()
        return student.grad

    return step, 4 * rows * vocab, f"N={rows} V={vocab} K={k}"


def case_sft(impl, gen, rows, vocab):
    logits = normal_logits(rows, vocab, gen).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=gen)

    def step():
        logits.grad = None
        if impl == "trl":
            loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum") / rows
        else:
            loss = -F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum() / rows
        loss.backward()
        return logits.grad

    return step, 4 * rows * vocab, f"N={rows} V={vocab}"


def make_case(name, impl, quick, gen):
    params = shapes(quick)[name]
    if name == "grpo_logprobs":
        return case_grpo_logprobs(impl, gen, **params)
    if name.startswith("grpo_logits"):
        return case_grpo_logits(impl, gen, **params)
    if name.startswith("advantages"):
        return case_advantages(impl, gen, **params)
    if name.startswith("topk_kl"):
        return case_topk_kl(impl, gen, **params)
    if name.startswith("sft"):
        return case_sft(impl, gen, **params)
    return case_jsd(impl, gen, **params)


def run(name, impl, quick, repeats, threads, blas, baseline):
    gen = torch.Generator().manual_seed(1234)
    step, input_bytes, label = make_case(name, impl, quick, gen)
    step()  # warm-up: allocator, thread pool, first-touch of the gradient
    # Tiny cases are timed over enough calls to be above the timer's resolution.
    inner = 1
    start = time.perf_counter()
    step()
    once = time.perf_counter() - start
    if once < 0.01:
        inner = max(1, int(0.01 / max(once, 1e-7)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - start) / inner)
    record = {
        "case": name,
        "impl": impl,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_rss_mib": rss_mib(),
        "baseline_rss_mib": baseline,
        "input_mib": input_bytes / 2**20,
        "threads": threads,
        "shape": label,
        "blas": blas,
    }
    print(json.dumps(record), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (our thread count)")
    parser.add_argument("--quick", action="store_true", help="the C++ bench's --quick shapes")
    parser.add_argument("--case", action="append", choices=list(shapes(False)), help="case(s) to run (default: all)")
    parser.add_argument("--impl", action="append", choices=["plain", "trl"], help="implementation(s) (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the median is reported")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    blas = check_blas()
    baseline = rss_mib()
    cases = args.case or list(shapes(args.quick))
    impls = args.impl or ["plain", "trl"]
    if len(cases) * len(impls) > 1:
        print("note: several cases in one process: peak_rss_mib is the running maximum over them", file=sys.stderr)
    for name in cases:
        for impl in impls:
            run(name, impl, args.quick, max(args.repeats, 1), args.threads, blas, baseline)


if __name__ == "__main__":
    main()
