#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# tests/kill_soak.py: `grpo train` killed with SIGKILL at random points and resumed until it finishes
# must end bit-identical to the uninterrupted run: model/model.safetensors byte for byte, and
# metrics.jsonl record for record (perf/ and time/ keys aside), every step logged exactly once. After
# each kill the run resumes from its checkpoint (`--resume DIR/checkpoint`), or, when it was killed
# before its first checkpoint, starts over (`--overwrite`). Random kills seldom land inside the few
# microseconds between the two renames of a checkpoint save, so the states a kill leaves there and at
# the other points that matter are also built by hand from real checkpoints: .checkpoint.old beside a
# complete .checkpoint.tmp; a checkpoint with later records and a torn last line in metrics.jsonl; the
# final checkpoint written but not model/. Standard library only; the SIGKILL of a 2-rank run under
# mpirun is tests/mpi/train_equivalence.py's.
#   python3 tests/kill_soak.py GRPO [--trials N] [--kills K] [--seed S]   (CI: a few trials; developers: N=200)
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# A tiny run of about half a second: 10 cold-start and 12 GRPO steps, a checkpoint every 3 steps (so
# kills land before the first one, between two, inside saves, in the final evaluation and after it).
RUN = ["--seed", "5", "--set", "model.hidden_size=32", "--set", "model.intermediate_size=64",
       "--set", "model.num_hidden_layers=1", "--set", "model.num_attention_heads=2",
       "--set", "model.num_key_value_heads=1", "--set", "task.operations=+", "--set", "task.heldout_size=16",
       "--set", "sft.steps=10", "--set", "sft.batch_size=8", "--set", "max_steps=12",
       "--set", "per_device_train_batch_size=8", "--set", "gradient_accumulation_steps=2",
       "--set", "num_generations=4", "--set", "max_completion_length=16", "--set", "beta=0.04",
       "--set", "reward_funcs=[\"partial_accuracy\", \"format\"]", "--set", "eval.size=8",
       "--set", "eval.num_samples=2", "--set", "eval.pass_k=[1,2]", "--set", "threads=1", "--set", "save_steps=3"]
STEPS = 22
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)
    return ok


def train(grpo, output, *extra):
    return subprocess.run([grpo, "train", "--output-dir", output] + RUN + list(extra), capture_output=True,
                          text=True, timeout=300)


def resume(grpo, output, *extra):
    return subprocess.run([grpo, "train", "--resume", os.path.join(output, "checkpoint")] + list(extra),
                          capture_output=True, text=True, timeout=300)


def records(output):
    """metrics.jsonl without the timing keys; None (and a failure) when a line is not JSON."""
    out = []
    with open(os.path.join(output, "metrics.jsonl")) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except ValueError:
                check(False, f"{output}/metrics.jsonl line {number} is not JSON: {line[:80]!r}")
                return None
            out.append({k: v for k, v in record.items() if not k.startswith(("perf/", "time/"))})
    return out


def model_bytes(output):
    with open(os.path.join(output, "model", "model.safetensors"), "rb") as f:
        return f.read()


def same_as_reference(output, reference, what):
    """The finished run in `output` equals the uninterrupted one, and left no interrupted save behind."""
    got = records(output)
    if got is not None and got != reference["records"]:
        steps = [r.get("step") for r in got]
        check(False, f"{what}: metrics.jsonl differs from the uninterrupted run's (steps logged: {steps})")
    check(model_bytes(output) == reference["model"], f"{what}: model.safetensors differs from the uninterrupted run's")
    left = [n for n in (".checkpoint.tmp", ".checkpoint.old") if os.path.exists(os.path.join(output, n))]
    check(not left, f"{what}: {left} left behind")


def deterministic_states(grpo, work, reference):
    """The states a kill leaves at the points random kills rarely reach, built from real checkpoints."""
    # Killed between the renames of the save at step 6: the checkpoint of step 3 moved aside to
    # .checkpoint.old, the complete one of step 6 still in .checkpoint.tmp, nothing named checkpoint.
    out = os.path.join(work, "between_renames")
    r = train(grpo, out, "--stop-after", "3")
    check(r.returncode == 0, f"between renames, first part: {r.stderr}")
    shutil.copytree(os.path.join(out, "checkpoint"), os.path.join(work, "step3"))
    r = resume(grpo, out, "--stop-after", "6")
    check(r.returncode == 0, f"between renames, second part: {r.stderr}")
    os.rename(os.path.join(out, "checkpoint"), os.path.join(out, ".checkpoint.tmp"))
    shutil.copytree(os.path.join(work, "step3"), os.path.join(out, ".checkpoint.old"))
    r = resume(grpo, out)
    check(r.returncode == 0 and "at step 6" in r.stdout, f"resumed between the renames: {r.stdout[-300:]} {r.stderr}")
    same_as_reference(out, reference, "killed between the renames of a save")

    # Killed during step 6 after the records of steps 4 and 5 (the last checkpoint is step 3's) and
    # in the middle of writing step 6's record.
    out = os.path.join(work, "torn_metrics")
    r = train(grpo, out, "--stop-after", "3")
    check(r.returncode == 0, f"torn metrics, first part: {r.stderr}")
    shutil.copytree(os.path.join(out, "checkpoint"), os.path.join(work, "torn_step3"))
    r = resume(grpo, out, "--stop-after", "5")
    check(r.returncode == 0, f"torn metrics, second part: {r.stderr}")
    shutil.rmtree(os.path.join(out, "checkpoint"))
    os.rename(os.path.join(work, "torn_step3"), os.path.join(out, "checkpoint"))
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(reference["records"][5])[:40])
    r = resume(grpo, out)
    check(r.returncode == 0 and "at step 3" in r.stdout, f"resumed after a torn record: {r.stdout[-300:]} {r.stderr}")
    same_as_reference(out, reference, "killed with records after the checkpoint and a torn last line")

    # Killed after the final checkpoint, before model/ was written.
    out = os.path.join(work, "before_model")
    r = train(grpo, out)
    check(r.returncode == 0, f"before model: {r.stderr}")
    shutil.rmtree(os.path.join(out, "model"))
    r = resume(grpo, out)
    check(r.returncode == 0, f"resumed after the final checkpoint: {r.stderr}")
    same_as_reference(out, reference, "killed after the final checkpoint")
    if not failures:
        print("deterministic kill points (between the renames, torn metrics, before model/): resumed bit-identically")


def checkpoint_step(output):
    """The step of the checkpoint a resume would start from (0: none)."""
    for name in ("checkpoint", ".checkpoint.tmp", ".checkpoint.old"):
        try:
            with open(os.path.join(output, name, "trainer_state.json")) as f:
                return json.load(f)["global_step"]
        except (OSError, ValueError, KeyError):
            continue
    return 0


def left_by_kill(output):
    """Where the run was when killed, by what it left."""
    names = {n for n in ("checkpoint", ".checkpoint.tmp", ".checkpoint.old", "model")
             if os.path.exists(os.path.join(output, n))}
    if {".checkpoint.tmp", ".checkpoint.old"} <= names and "checkpoint" not in names:
        return "between the renames of a save"
    if ".checkpoint.tmp" in names:
        return "while a save filled .checkpoint.tmp"
    if ".checkpoint.old" in names:
        return "after a save's renames"
    if "model" in names:
        return "while or after model/ was written"
    if "checkpoint" in names:
        return "between checkpoints"
    return "before the first checkpoint"


def soak(grpo, work, reference, trials, kills, rng):
    """Each trial: kill up to `kills` times at random moments, resuming after each, then let it finish."""
    seen = {}
    for trial in range(trials):
        out = os.path.join(work, f"trial{trial}")
        fresh = [grpo, "train", "--output-dir", out] + RUN
        command, killed_times, history, finished = fresh, 0, [], False
        for _ in range(3 * kills + 6):
            holds_run = any(os.path.exists(os.path.join(out, n)) for n in ("metrics.jsonl", "checkpoint", "model"))
            job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            killed = False
            if killed_times < kills:
                # Within what is left of the run (a resumed run is shorter), now and then after it, and
                # a quarter of the time early, before the first checkpoint of a fresh run.
                left = max(0.2, 1 - checkpoint_step(out) / STEPS)
                early = rng.random() < 0.25
                try:
                    job.wait(timeout=rng.uniform(0, (0.15 if early else 1.1 * left) * reference["seconds"]))
                except subprocess.TimeoutExpired:
                    job.send_signal(signal.SIGKILL)
                    killed = True
            stderr = job.communicate(timeout=300)[1]
            if killed:
                killed_times += 1
                where = left_by_kill(out)
                seen[where] = seen.get(where, 0) + 1
                history.append(where)
                command = [grpo, "train", "--resume", os.path.join(out, "checkpoint")]
                continue
            if command == fresh and holds_run:
                # A new run into the killed run's directory must be refused, naming the ways on.
                if not check(job.returncode != 0 and "holds a run already" in stderr and "--overwrite" in stderr,
                             f"trial {trial}: a new run into a killed run's directory was not refused: {stderr}"):
                    break
                command = fresh + ["--overwrite"]
                continue
            if job.returncode == 0:
                finished = True
                break
            if "no checkpoint there" in stderr and "--resume" in command:
                history.append("started over")  # killed before the first checkpoint
                seen["then started over"] = seen.get("then started over", 0) + 1
                command = fresh
                continue
            check(False, f"trial {trial} ({' -> '.join(history)}): {' '.join(command[1:4])} failed: {stderr[-400:]}")
            break
        if not finished:
            check(False, f"trial {trial} ({' -> '.join(history)}): did not finish")
            continue
        same_as_reference(out, reference, f"trial {trial} (killed {' -> '.join(history) or 'never: it ended first'})")
        shutil.rmtree(out, ignore_errors=True)
    print(f"{trials} trials, kills landed: " + ", ".join(f"{n} {w}" for w, n in sorted(seen.items())))


def main():
    parser = argparse.ArgumentParser(description="grpo train killed with SIGKILL and resumed, against the uninterrupted run")
    parser.add_argument("grpo")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3, help="kills per trial before it may finish")
    parser.add_argument("--seed", type=int, default=None, help="random kill times (default: from the clock)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % 1000000
    print(f"kill soak: seed {seed} (rerun with --seed {seed})")
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="grpo_kill_soak_")
    try:
        full = os.path.join(work, "uninterrupted")
        start = time.monotonic()
        r = train(args.grpo, full)
        seconds = time.monotonic() - start
        if not check(r.returncode == 0, f"uninterrupted run: {r.stderr}"):
            return 1
        reference = {"records": records(full), "model": model_bytes(full), "seconds": seconds}
        check([x["step"] for x in reference["records"]] == list(range(1, STEPS + 1)), "the uninterrupted run's steps")
        print(f"uninterrupted run: {STEPS} steps in {seconds:.2f} s")
        deterministic_states(args.grpo, work, reference)
        soak(args.grpo, work, reference, args.trials, args.kills, rng)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
