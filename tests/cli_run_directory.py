#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# tests/cli_run_directory.py: one run per output directory, as a user meets it. A second `grpo train`
# (or `grpo sft`) into the directory of a running one fails at once naming the directory and the
# running one's pid, and changes nothing; once that run is killed with SIGKILL its lock is gone. A new
# run into a directory holding a run (killed or finished) is refused, naming what is there and the
# ways on, unless --overwrite, which then gives exactly a fresh run's results; --resume of the
# directory's own checkpoint is allowed; --overwrite will not remove the model the run starts from.
# Standard library only.
#   python3 tests/cli_run_directory.py GRPO
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TINY = ["--seed", "5", "--set", "model.hidden_size=32", "--set", "model.intermediate_size=64",
        "--set", "model.num_hidden_layers=1", "--set", "model.num_attention_heads=2",
        "--set", "model.num_key_value_heads=1", "--set", "task.operations=+", "--set", "task.heldout_size=16",
        "--set", "sft.batch_size=8", "--set", "per_device_train_batch_size=8",
        "--set", "gradient_accumulation_steps=2", "--set", "num_generations=4", "--set", "max_completion_length=16",
        "--set", "eval.size=8", "--set", "eval.num_samples=2", "--set", "eval.pass_k=[1,2]", "--set", "threads=1"]
RUN = TINY + ["--set", "sft.steps=4", "--set", "max_steps=3", "--set", "save_steps=2"]
# Long enough to be running while the others try the directory (it is killed long before its end).
LONG = TINY + ["--set", "sft.steps=100000", "--set", "max_steps=1", "--set", "save_steps=0"]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)
    return ok


def grpo_run(grpo, verb, output, settings, *extra):
    return subprocess.run([grpo, verb, "--output-dir", output] + settings + list(extra), capture_output=True,
                          text=True, timeout=300)


def snapshot(directory):
    """Every file under `directory` with its bytes, but the lock file."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if name != ".grpo.lock":
                with open(path, "rb") as f:
                    out[os.path.relpath(path, directory)] = f.read()
    return out


def results(directory):
    """The model's bytes and the metrics without their timing keys."""
    with open(os.path.join(directory, "model", "model.safetensors"), "rb") as f:
        model = f.read()
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        metrics = [{k: v for k, v in json.loads(line).items() if not k.startswith(("perf/", "time/"))} for line in f]
    return model, metrics


def wait_for_holder(directory, job):
    """The pid in directory/.grpo.lock once the running job wrote it (None if it never does)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.poll() is None:
        try:
            with open(os.path.join(directory, ".grpo.lock")) as f:
                text = f.read().strip()
            if text and os.path.exists(os.path.join(directory, "metrics.jsonl")):
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return None


def main():
    grpo = sys.argv[1]
    work = tempfile.mkdtemp(prefix="grpo_run_directory_")
    try:
        reference = os.path.join(work, "reference")
        r = grpo_run(grpo, "train", reference, RUN)
        if not check(r.returncode == 0, f"reference run: {r.stderr}"):
            return 1

        # Two runs into one directory: the second fails at once, naming the directory and the holder.
        shared = os.path.join(work, "shared")
        running = subprocess.Popen([grpo, "train", "--output-dir", shared] + LONG, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            holder = wait_for_holder(shared, running)
            check(holder == running.pid, f"the lock file names pid {holder}, the run is {running.pid}")
            before = snapshot(shared)
            for verb, extra in (("train", []), ("train", ["--overwrite"]), ("sft", []), ("sft", ["--overwrite"])):
                start = time.monotonic()
                r = grpo_run(grpo, verb, shared, RUN, *extra)
                what = f"grpo {verb} {' '.join(extra)} into a running run's directory"
                check(r.returncode == 1 and shared in r.stderr and f"pid {running.pid}" in r.stderr
                      and "another run is writing" in r.stderr, f"{what}: {r.returncode} {r.stderr[-300:]}")
                check(time.monotonic() - start < 30, f"{what}: took {time.monotonic() - start:.1f} s to fail")
            r = subprocess.run([grpo, "train", "--resume", os.path.join(reference, "checkpoint"), "--output-dir",
                                shared], capture_output=True, text=True, timeout=300)
            check(r.returncode == 1 and f"pid {running.pid}" in r.stderr, f"--resume into it: {r.stderr[-300:]}")
            check(running.poll() is None, "the running run died")
            # Only compare what the refused runs could have written (the running one appends metrics).
            after = snapshot(shared)
            check(sorted(after) == sorted(before) and all(after[k] == before[k] for k in before
                                                          if k != "metrics.jsonl"),
                  f"the refused runs changed the directory: {sorted(before)} -> {sorted(after)}")
        finally:
            running.send_signal(signal.SIGKILL)
            running.wait()
        if not failures:
            print("a second train / sft / --overwrite / --resume into a running run's directory: refused at once, "
              "naming it and the holder's pid")

        # The killed run's lock died with it; its directory holds a run: refused unless --overwrite.
        metrics_before = snapshot(shared)["metrics.jsonl"]
        r = grpo_run(grpo, "train", shared, RUN)
        check(r.returncode == 1 and "holds a run already (metrics.jsonl)" in r.stderr and "--overwrite" in r.stderr
              and "--resume " + os.path.join(shared, "checkpoint") in r.stderr and "--output-dir" in r.stderr,
              f"a new run into the killed run's directory: {r.stderr[-400:]}")
        check(snapshot(shared)["metrics.jsonl"] == metrics_before, "the refused run changed metrics.jsonl")
        r = grpo_run(grpo, "train", shared, RUN, "--overwrite")
        check(r.returncode == 0, f"--overwrite after a killed run: {r.stderr[-400:]}")
        check(results(shared) == results(reference), "--overwrite over a killed run: not a fresh run's results")
        if not failures:
            print("the killed run left no lock; a new run into its directory is refused, --overwrite gives a fresh run")

        # A finished run: refused, its files untouched; resuming its own checkpoint is allowed.
        before = snapshot(shared)
        for verb in ("train", "sft"):
            r = grpo_run(grpo, verb, shared, RUN)
            check(r.returncode == 1 and "holds a run already (model/, checkpoint/, metrics.jsonl)" in r.stderr,
                  f"grpo {verb} into a finished run's directory: {r.stderr[-400:]}")
        check(snapshot(shared) == before, "a refused run changed the finished run's files")
        r = subprocess.run([grpo, "train", "--resume", os.path.join(shared, "checkpoint") + "/"], capture_output=True,
                           text=True, timeout=300)
        check(r.returncode == 0, f"--resume of the finished run's own checkpoint: {r.stderr[-400:]}")
        check(results(shared) == results(reference), "resuming a finished run changed its results")
        # Another directory's checkpoint resumed into it is a new run there.
        r = subprocess.run([grpo, "train", "--resume", os.path.join(reference, "checkpoint"), "--output-dir", shared],
                           capture_output=True, text=True, timeout=300)
        check(r.returncode == 1 and "holds a run already" in r.stderr, f"a foreign --resume: {r.stderr[-400:]}")
        # --overwrite does not remove the model the run starts from.
        r = grpo_run(grpo, "train", shared, RUN, "--overwrite", "--model", os.path.join(shared, "model"))
        check(r.returncode == 1 and "model.init" in r.stderr and "--overwrite would remove" in r.stderr,
              f"--overwrite with the model inside: {r.stderr[-400:]}")
        check(snapshot(shared) == before, "a refused --overwrite changed the finished run's files")
        r = grpo_run(grpo, "sft", shared, RUN, "--overwrite")
        check(r.returncode == 0, f"sft --overwrite: {r.stderr[-400:]}")
        with open(os.path.join(shared, "metrics.jsonl")) as f:
            check(sum(1 for _ in f) == 4, "sft --overwrite: metrics.jsonl is not the new run's 4 records")
        if not failures:
            print("a finished run's directory: train and sft refused, its own --resume allowed, --overwrite replaces it")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
