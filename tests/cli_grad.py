#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# tests/cli_grad.py: `grpo grad` and `grpo prompts` as bench/trl_compare.py calls them. `grpo grad` on the batch of
# TRL's first GRPO step on the tiny Qwen2 (tests/data/hf/grad_fixture.json, written by bench/trl_grad_fixture.py with
# TRL's GRPOTrainer) gives TRL's advantages, loss and gradient norm (before clipping) within 1e-4 relative, for the
# native policy and, in a build with LibTorch, the torch policy; a group whose rewards are all equal has loss and
# gradient 0; malformed batches are refused naming the file, the row and the field. Standard library only.
#   python3 tests/cli_grad.py GRPO [--torch]
import argparse
import json
import os
import subprocess
import sys
import tempfile

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "hf")
MODEL = os.path.join(DATA, "models", "tiny-qwen2")
TOLERANCE = 1e-4  # fp32 on the CPU: summation order alone (TRL and grpo agree to ~1e-6 here)
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def grad(grpo, tmp, rows, settings, policy, name="batch.jsonl"):
    source, target = os.path.join(tmp, name), os.path.join(tmp, "grad.json")
    with open(source, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    args = [grpo, "grad", "--model", MODEL, "--policy", policy, "--input", source, "--output", target,
            "--set", "threads=2"] + [x for s in settings for x in ("--set", s)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    with open(target, encoding="utf-8") as f:
        return json.load(f), None


def relative(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("grpo")
    ap.add_argument("--torch", action="store_true", help="also the LibTorch policy")
    args = ap.parse_args()
    with open(os.path.join(DATA, "grad_fixture.json"), encoding="utf-8") as f:
        fixture = json.load(f)
    settings, rows = fixture["settings"], fixture["rows"]
    policies = ["native"] + (["torch"] if args.torch else [])
    with tempfile.TemporaryDirectory() as tmp:
        for policy in policies:
            out, err = grad(args.grpo, tmp, rows, settings, policy)
            check(err is None, f"{policy}: grpo grad failed: {err}")
            if out is None:
                continue
            adv = max(abs(a - b) for a, b in zip(out["advantages"], fixture["advantages"]))
            check(adv <= 1e-6, f"{policy}: advantages differ from TRL's by {adv}")
            check(relative(out["loss"], fixture["loss"]) <= TOLERANCE,
                  f"{policy}: loss {out['loss']} vs TRL's {fixture['loss']}")
            check(relative(out["grad_norm"], fixture["grad_norm"]) <= TOLERANCE,
                  f"{policy}: gradient norm {out['grad_norm']} vs TRL's {fixture['grad_norm']}")
            check(out["rows"] == len(rows) and out["kept_rows"] == len(rows) and out["micro_batches"] == 2,
                  f"{policy}: rows {out['rows']}, kept {out['kept_rows']}, micro-batches {out['micro_batches']}")
            print(f"{policy}: loss {out['loss']:.8g} (TRL {fixture['loss']:.8g}), gradient norm {out['grad_norm']:.8g} "
                  f"(TRL {fixture['grad_norm']:.8g}), advantages within {adv:.1e}")
            # Equal rewards in every group: every advantage is 0, so are the loss and the gradient.
            flat = [dict(r, reward=1.0) for r in rows]
            out, err = grad(args.grpo, tmp, flat, settings, policy)
            check(out is not None and out["loss"] == 0 and out["grad_norm"] == 0,
                  f"{policy}: equal rewards: {out or err}")
            # Given advantages are used as they are: TRL's own reproduce its numbers.
            given = [dict(r, advantage=a) for r, a in zip(rows, fixture["advantages"])]
            out, err = grad(args.grpo, tmp, given, settings, policy)
            check(out is not None and relative(out["grad_norm"], fixture["grad_norm"]) <= TOLERANCE,
                  f"{policy}: with TRL's advantages given: {out or err}")

        # Malformed batches: the message names the file, the row and the field.
        first = json.dumps(rows[0])
        other_prompt = dict(rows[1], prompt_ids=rows[1]["prompt_ids"] + [5])
        no_reward = {k: v for k, v in rows[0].items() if k != "reward"}
        cases = [
            ([first] + [other_prompt] + rows[2:], "bad_group.jsonl", ["bad_group.jsonl: row 2", "prompt_ids"]),
            ([json.dumps(no_reward)] + rows[1:], "no_reward.jsonl", ["no_reward.jsonl:1", "missing \"reward\""]),
            (rows[:3], "short.jsonl", ["short.jsonl", "3 rows", "num_generations = 4"]),
            ([dict(rows[0], completion_ids=[1, 999999])] + rows[1:], "vocab.jsonl",
             ["vocab.jsonl: row 1", "999999", "vocabulary of 288"]),
            ([dict(rows[0], advantage=0.5)] + rows[1:], "some_adv.jsonl", ["row 2", "\"advantage\""]),
            ([dict(rows[0], stopped="yes")] + rows[1:], "stopped.jsonl", ["stopped.jsonl:1", "\"stopped\""]),
            (["{\"prompt_ids\": [1], \"completion_ids\": [-1], \"reward\": 0}"], "negative.jsonl",
             ["negative.jsonl:1", "\"completion_ids\"[0]"]),
        ]
        for batch, name, needles in cases:
            out, err = grad(args.grpo, tmp, batch, settings, "native", name)
            check(out is None and all(n in (err or "") for n in needles), f"{name}: expected {needles}, got {err!r}")

        # grpo prompts: the count, the fields, and --split checked.
        target = os.path.join(tmp, "prompts.jsonl")
        base = [args.grpo, "prompts", "--model", MODEL] + [x for s in settings for x in ("--set", s)]
        r = subprocess.run(base + ["--count", "3", "--output", target], capture_output=True, text=True)
        lines = [json.loads(line) for line in open(target, encoding="utf-8")] if r.returncode == 0 else []
        check(len(lines) == 3 and all({"prompt", "answer", "prompt_ids"} <= set(x) for x in lines),
              f"grpo prompts: {r.stderr.strip()} {lines}")
        # The fixture's two prompts are the first two `grpo prompts` wrote with its settings (the trainer's draw).
        check([x["prompt_ids"] for x in lines[:2]] == [rows[0]["prompt_ids"], rows[4]["prompt_ids"]],
              "grpo prompts: the first two prompts differ from the fixture's")
        r = subprocess.run(base + ["--split", "heldout", "--count", "9", "--output", target], capture_output=True,
                           text=True)
        lines = [json.loads(line) for line in open(target, encoding="utf-8")] if r.returncode == 0 else []
        check(len(lines) == 4, f"grpo prompts --split heldout: {len(lines)} prompts (the held-out split has 4)")
        r = subprocess.run(base + ["--split", "test", "--output", target], capture_output=True, text=True)
        check(r.returncode == 1 and "--split" in r.stderr and "test" in r.stderr, f"--split test: {r.stderr.strip()}")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("cli_grad: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
