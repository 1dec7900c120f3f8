#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# tests/cli_hf.py: the Hugging Face commands of the grpo tool checked against the Python stack's own
# numbers, as a user's script would call them: `grpo tokenize` against the ids of the `tokenizers`
# library (tests/data/hf/tokenizers/*/expected.json and the model fixtures), `grpo score` against
# transformers' fp32 log-probs (tests/data/hf/models/*/fixture.json, written by
# tests/fixtures/make_model_fixtures.py) within 1e-4, for the native policy and, in a build with
# LibTorch, the torch policy; and, given a SmolLM2-135M-Instruct directory (cmake/setup-smollm2.sh),
# the same on the real model plus its greedy answer. Standard library only.
#   python3 tests/cli_hf.py GRPO [--torch]                  the fixtures of tests/data/hf
#   python3 tests/cli_hf.py GRPO [--torch] --smollm2 DIR    the real model
import argparse
import json
import os
import subprocess
import sys
import tempfile

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "hf")
TOLERANCE = 1e-4  # fp32 log-probs: the model's own rounding, far below any real difference
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def run(grpo, args, stdin=None):
    return subprocess.run([grpo] + args, input=stdin, capture_output=True, text=True)


def tokenize(grpo, model, text):
    r = run(grpo, ["tokenize", "--model", model], stdin=text)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return json.loads(r.stdout), None


def score(grpo, model, pairs, policy, temperature=1.0, extra=()):
    with tempfile.TemporaryDirectory() as tmp:
        source, target = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(source, "w", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps({"prompt": p["prompt"], "completion": p["completion"]}) + "\n")
        r = run(grpo, ["score", "--model", model, "--policy", policy, "--input", source, "--output", target,
                       "--temperature", str(temperature), "--set", "threads=2", *extra])
        if r.returncode != 0:
            return None, r.stderr.strip()
        with open(target, encoding="utf-8") as f:
            return [json.loads(line) for line in f], None


def compare_scores(name, pairs, rows, key):
    worst = 0.0
    for p, row in zip(pairs, rows):
        check(row["completion_ids"] == p["completion_ids"], f"{name}: completion ids {row['completion_ids']}")
        check(len(row["logprobs"]) == len(p[key]), f"{name}: {len(row['logprobs'])} log-probs")
        worst = max([worst] + [abs(a - b) for a, b in zip(row["logprobs"], p[key])])
    check(worst <= TOLERANCE, f"{name}: max |log-prob - transformers'| = {worst:.3g} > {TOLERANCE}")
    return worst


def tokenizer_fixtures(grpo):
    for name in sorted(os.listdir(os.path.join(DATA, "tokenizers"))):
        directory = os.path.join(DATA, "tokenizers", name)
        expected = os.path.join(directory, "expected.json")
        if not os.path.isfile(expected):
            continue
        with open(expected, encoding="utf-8") as f:
            # Every case is compared in C++ (hf_tokenizer_test.cpp); here a spread of them checks the
            # command's interface (each call pays the process start, a third of a second with LibTorch).
            cases = json.load(f)["cases"][::6]
        mismatches = 0
        for case in cases:
            ids, error = tokenize(grpo, directory, case["text"])
            if ids != case["ids"]:
                mismatches += 1
                check(False, f"tokenize {name} {case['text']!r}: {error or ids} != {case['ids']}")
        print(f"tokenize {name}: {len(cases) - mismatches}/{len(cases)} equal to tokenizers'")


def model_fixtures(grpo, policies):
    for name in sorted(os.listdir(os.path.join(DATA, "models"))):
        directory = os.path.join(DATA, "models", name)
        with open(os.path.join(directory, "fixture.json"), encoding="utf-8") as f:
            fixture = json.load(f)
        pairs = fixture["pairs"]
        for p in pairs:
            ids, error = tokenize(grpo, directory, p["prompt"])
            check(ids == p["prompt_ids"], f"tokenize {name} prompt {p['prompt']!r}: {error or ids}")
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
            native_runs = json.load(f).get("model_type") != "qwen3"  # q/k norm: the native model refuses it
        for policy in policies:
            rows, error = score(grpo, directory, pairs, policy)
            if policy == "native" and not native_runs:
                check(rows is None and "q_norm" in (error or ""), f"score {name} native: expected a refusal naming "
                      f"q_norm, got {error or 'success'}")
                print(f"score {name} native: refused as expected ({error})")
                continue
            if rows is None:
                check(False, f"score {name} {policy}: {error}")
                continue
            worst = compare_scores(f"score {name} {policy}", pairs, rows, "logprobs")
            rows, error = score(grpo, directory, pairs, policy, 0.7)
            worst = max(worst, compare_scores(f"score {name} {policy} T=0.7", pairs, rows or [], "logprobs_t07"))
            print(f"score {name} {policy}: max |diff| {worst:.2g} over {len(pairs)} completions (T = 1 and 0.7)")


def smollm2(grpo, directory, policies):
    with open(os.path.join(DATA, "smollm2_fixture.json"), encoding="utf-8") as f:
        fixture = json.load(f)
    for p in fixture["pairs"]:
        ids, error = tokenize(grpo, directory, p["prompt"] + p["completion"])
        check(ids == p["prompt_ids"] + p["completion_ids"], f"tokenize SmolLM2 {p['prompt']!r}: {error or ids}")
    for policy in policies:
        rows, error = score(grpo, directory, fixture["pairs"], policy)
        if rows is None:
            check(False, f"score SmolLM2 {policy}: {error}")
            continue
        worst = compare_scores(f"score SmolLM2 {policy}", fixture["pairs"], rows, "logprobs")
        print(f"score SmolLM2 {policy}: max |diff| {worst:.2g} over {len(rows)} completions")
    greedy = fixture["greedy"]
    question = greedy["prompt"].split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    system = greedy["prompt"].split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0]
    for policy in policies:
        r = run(grpo, ["sample", "--model", directory, "--policy", policy, "--greedy", "--prompt", question,
                       "--set", f"chat.system_prompt={system}", "--set", f"max_completion_length={greedy['max_new_tokens']}"])
        answer = greedy["text"].replace("<|im_end|>", "")
        check(r.returncode == 0 and f"completion: {answer}\n" in r.stdout,
              f"sample SmolLM2 {policy}: expected {answer!r}, got {r.stdout or r.stderr}")
        print(f"sample SmolLM2 {policy} (greedy): {answer!r} as transformers")


def errors(grpo, policies):
    model = os.path.join(DATA, "models", "tiny-llama")
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"prompt": "a", "completion": "b"}\n{"prompt": 1}\n')
        r = run(grpo, ["score", "--model", model, "--policy", policies[0], "--input", bad, "--output",
                       os.path.join(tmp, "o.jsonl")])
        check(r.returncode == 1 and "bad.jsonl:2" in r.stderr and "prompt" in r.stderr, f"score, bad line: {r.stderr}")
        check(not os.path.exists(os.path.join(tmp, "o.jsonl")), "score wrote output despite an error")
        r = run(grpo, ["tokenize", "--model", tmp], stdin="x")
        check(r.returncode == 1 and "tokenizer.json" in r.stderr, f"tokenize without tokenizer.json: {r.stderr}")
        r = run(grpo, ["score", "--model", model, "--policy", policies[0], "--input", os.path.join(tmp, "none.jsonl"),
                       "--output", os.path.join(tmp, "o.jsonl")])
        check(r.returncode == 1 and "none.jsonl" in r.stderr, f"score, missing input: {r.stderr}")
    print("errors: each names the file and the field")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("grpo")
    parser.add_argument("--torch", action="store_true", help="the build has the LibTorch policy")
    parser.add_argument("--smollm2", help="a SmolLM2-135M-Instruct directory (cmake/setup-smollm2.sh): check only it")
    args = parser.parse_args()
    policies = ["native"] + (["torch"] if args.torch else [])
    if args.smollm2 and not os.path.isfile(os.path.join(args.smollm2, "model.safetensors")):
        print(f"{args.smollm2}: no model (cmake/setup-smollm2.sh was skipped or failed); skipping")
        return 77
    if not args.smollm2:
        tokenizer_fixtures(args.grpo)
        model_fixtures(args.grpo, policies)
        errors(args.grpo, policies)
    else:
        smollm2(args.grpo, args.smollm2, policies)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
