#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# tests/mpi/train_equivalence.py: `mpirun -np 2 grpo train` against one process on the same global
# batch, as a user launches it. The GRPO run uses batch-scaled advantages, token-mean (DAPO)
# denominators, dynamic sampling, a KL reference and mu = 2, so a statistic computed per rank
# instead of over the whole batch changes the numbers at once. Checked: every metric of every step
# (rollouts, rewards and counts equal; losses and norms within 1e-6 relative) and the final weights
# within 1e-6 relative: the float gradients are summed in another order (each rank's micro-batches,
# then the ranks), which float training amplifies step by step, so the GRPO run starts from one
# cold-started model and is 4 steps long; a run stopped and resumed under mpirun ends bit-identical
# to the uninterrupted 2-rank run, and so does one killed with SIGKILL and resumed; the cold start on
# 2 ranks follows one process's loss curve; and
# the errors for a world size that does not divide the prompts and for ranks started with
# different configs.
#   python3 tests/mpi/train_equivalence.py GRPO LAUNCHER...     (LAUNCHER: mpiexec -n 2 [flags])
import json
import os
import shutil
import signal
import time
import struct
import subprocess
import sys
import tempfile

COMMON = ["--seed", "3", "--set", "task.operations=+", "--set", "task.max_digits=1", "--set", "task.heldout_size=8",
          "--set", "model.hidden_size=64", "--set", "model.intermediate_size=128", "--set", "model.num_hidden_layers=2",
          "--set", "threads=1", "--set", "eval.size=7", "--set", "eval.num_samples=2", "--set", "eval.pass_k=[1,2]"]
# GRPO from a cold-started model (made once by `grpo sft` in one process): 4 prompts x 4 completions a
# step, 2 prompts per rank, one micro-batch of 8 rows each (two in one process).
RUN = COMMON + ["--set", "sft.steps=0", "--set", "max_steps=4", "--set", "per_device_train_batch_size=8",
                "--set", "gradient_accumulation_steps=2", "--set", "num_generations=4",
                "--set", "max_completion_length=48", "--set", "dynamic_sampling=true", "--set", "scale_rewards=batch",
                "--set", "loss_type=dapo", "--set", "beta=0.04", "--set", "num_iterations=2",
                "--set", "reward_funcs=[\"partial_accuracy\", \"format\"]"]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def train(command, output, *extra, verb="train", settings=None):
    return subprocess.run(command + [verb, "--output-dir", output] + (settings or RUN) + list(extra),
                          capture_output=True, text=True, timeout=600)


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def weights(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, v in header.items():
        assert v["dtype"] == "F32"
        begin, end = v["data_offsets"]
        out[name] = struct.unpack(f"<{(end - begin) // 4}f", data[8 + n + begin:8 + n + end])
    return out


def relative(a, b):
    """|a - b| relative to b, and absolute below 1 (losses are sums with cancellation: their size is
    not the scale of their rounding)."""
    return abs(a - b) / max(abs(b), 1.0)


def main():
    grpo, launcher = sys.argv[1], sys.argv[2:]
    work = tempfile.mkdtemp(prefix="grpo_mpi_")
    try:
        cold = os.path.join(work, "cold")
        r = train([grpo], cold, "--set", "sft.steps=120", "--set", "sft.batch_size=16", verb="sft", settings=COMMON)
        check(r.returncode == 0, f"cold start: {r.stderr}")
        start = ["--set", "model.init=" + os.path.join(cold, "model")]
        one = os.path.join(work, "one")
        two = os.path.join(work, "two")
        r = train([grpo], one, *start)
        check(r.returncode == 0, f"one process: {r.stderr}")
        r = train(launcher + [grpo], two, *start)
        check(r.returncode == 0, f"two ranks: {r.stderr}")
        check("2 ranks" in r.stdout, f"the 2-rank run does not say so: {r.stdout[:300]}")
        check(r.stdout.count("held-out accuracy after GRPO") == 1, "only rank 0 prints")
        if failures:
            return 1
        a, b = metrics(os.path.join(one, "metrics.jsonl")), metrics(os.path.join(two, "metrics.jsonl"))
        check(len(a) == len(b) == 4, f"{len(a)} and {len(b)} metrics records")
        worst = 0.0
        for step, (x, y) in enumerate(zip(a, b)):
            for key, value in x.items():
                if key.startswith(("perf/", "time/")) or value is None:
                    continue
                if key.startswith("rollout/logprob_diff"):  # sampler vs trainer, ~1e-7: rounding noise itself
                    check(abs(y[key] - value) <= 1e-6, f"step {step + 1} {key}: {y[key]} vs {value}")
                    continue
                worst = max(worst, relative(y[key], value))
                check(relative(y[key], value) <= 1e-6, f"step {step + 1} {key}: {y[key]} vs {value}")
        check(any(x.get("kept_rows", 0) > 0 and x.get("actor/grad_norm", 0) > 0 for x in a), "no GRPO step trained")
        wa, wb = weights(os.path.join(one, "model", "model.safetensors")), weights(os.path.join(two, "model", "model.safetensors"))
        # Norm-wise per tensor: ||two - one|| / ||one||, so that a weight near zero does not count
        # as a large relative difference.
        largest = max((sum((q - p) ** 2 for p, q in zip(wa[n], wb[n])) / max(sum(p * p for p in wa[n]), 1e-30)) ** 0.5
                      for n in wa)
        check(largest <= 1e-6, f"final weights differ by {largest:.3g} relative")
        print(f"1 process vs 2 ranks: metrics within {worst:.2g}, weights within {largest:.2g} (relative)")

        # Stopped (in GRPO, with a checkpoint) and resumed under mpirun: bit-identical to the 2-rank run.
        split = os.path.join(work, "split")
        r = train(launcher + [grpo], split, *start, "--stop-after", "2")
        check(r.returncode == 0, f"2 ranks, stopped: {r.stderr}")
        r = subprocess.run(launcher + [grpo, "train", "--resume", os.path.join(split, "checkpoint")],
                           capture_output=True, text=True, timeout=600)
        check(r.returncode == 0, f"2 ranks, resumed: {r.stderr}")
        with open(os.path.join(split, "model", "model.safetensors"), "rb") as f, \
                open(os.path.join(two, "model", "model.safetensors"), "rb") as g:
            check(f.read() == g.read(), "the resumed 2-rank run's model differs from the uninterrupted one")
        print("2 ranks stopped at step 2 and resumed: final model bit-identical")

        # A checkpoint of 2 ranks resumed by one process: the state is global, so it continues
        # (only the order of the float sums changes).
        other = os.path.join(work, "other")
        r = train(launcher + [grpo], other, *start, "--stop-after", "2")
        r = subprocess.run([grpo, "train", "--resume", os.path.join(other, "checkpoint")], capture_output=True,
                           text=True, timeout=600)
        check(r.returncode == 0, f"1 process resuming 2 ranks' checkpoint: {r.stderr}")
        wo = weights(os.path.join(other, "model", "model.safetensors"))
        moved = max((sum((q - p) ** 2 for p, q in zip(wb[n], wo[n])) / max(sum(p * p for p in wb[n]), 1e-30)) ** 0.5
                    for n in wb)
        check(moved <= 1e-6, f"resumed by 1 process: weights differ by {moved:.3g} from the 2-rank run")
        print(f"2 ranks' checkpoint resumed by 1 process: weights within {moved:.2g} of the 2-rank run")

        # Killed with SIGKILL while training under mpirun (a checkpoint after every step), then resumed.
        killed = os.path.join(work, "killed")
        job = subprocess.Popen(launcher + [grpo, "train", "--output-dir", killed] + RUN + start + ["--set", "save_steps=1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        state = os.path.join(killed, "checkpoint", "trainer_state.json")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            try:
                with open(state) as f:
                    if json.load(f)["global_step"] >= 2:
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        was_running = job.poll() is None
        if was_running:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        r = subprocess.run(launcher + [grpo, "train", "--resume", os.path.join(killed, "checkpoint")],
                           capture_output=True, text=True, timeout=600)
        check(r.returncode == 0, f"2 ranks, resumed after SIGKILL: {r.stderr}")
        with open(os.path.join(killed, "model", "model.safetensors"), "rb") as f, \
                open(os.path.join(two, "model", "model.safetensors"), "rb") as g:
            check(f.read() == g.read(), "the run killed and resumed under mpirun ends with another model")
        print(f"2 ranks killed with SIGKILL{'' if was_running else ' (it had finished)'} after step 2 and resumed: "
              "final model bit-identical")

        # The cold start itself on 2 ranks (each a share of every batch): the same loss curve.
        sft_one, sft_two = os.path.join(work, "sft1"), os.path.join(work, "sft2")
        quick = COMMON + ["--set", "sft.steps=6", "--set", "sft.batch_size=16"]
        r1 = train([grpo], sft_one, verb="sft", settings=quick)
        r2 = train(launcher + [grpo], sft_two, verb="sft", settings=quick)
        check(r1.returncode == 0 and r2.returncode == 0, f"sft: {r1.stderr} {r2.stderr}")
        losses = [(x["sft/loss"], y["sft/loss"]) for x, y in zip(metrics(os.path.join(sft_one, "metrics.jsonl")),
                                                                   metrics(os.path.join(sft_two, "metrics.jsonl")))]
        check(len(losses) == 6 and all(relative(q, p) <= 1e-5 for p, q in losses), f"sft losses {losses}")
        print(f"cold start on 2 ranks: loss curve within {max(relative(q, p) for p, q in losses):.2g} of one process")

        # Bad input: 3 ranks cannot share 4 prompts; ranks with different configs.
        three = [launcher[0]] + [("3" if i > 0 and launcher[i - 1] in ("-n", "-np") else x) for i, x in enumerate(launcher[1:], 1)]
        r = train(three + [grpo], os.path.join(work, "three"), *start)
        check(r.returncode != 0 and "3 data-parallel ranks" in r.stderr, f"3 ranks: {r.stderr[-400:]}")
        split_launcher = [x for x in launcher if x not in ("-n", "-np", "2")]
        mpmd = split_launcher + ["-n", "1", grpo, "train", "--output-dir", os.path.join(work, "mpmd")] + RUN + \
            [":", "-n", "1", grpo, "train", "--output-dir", os.path.join(work, "mpmd")] + RUN + ["--set", "beta=0.05"]
        r = subprocess.run(mpmd, capture_output=True, text=True, timeout=120)
        check(r.returncode != 0 and "rank 1" in r.stderr and "config" in r.stderr, f"different configs: {r.stderr[-400:]}")
        print("errors: 3 ranks for 4 prompts, and rank 1 started with another config, each named")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
