#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# bench/trl_grad_fixture.py: writes tests/data/hf/grad_fixture.json, the fixture of tests/cli_grad.py: TRL's
# GRPOTrainer takes one step on the tiny Qwen2 of tests/data/hf/models/tiny-qwen2 (fp32, CPU) from grpo's own prompts
# (`grpo prompts`, plain template, 1-digit additions), and the fixture keeps that step's generation batch (prompt and
# completion ids, whether each stopped, rewards), TRL's advantages, the loss of the step (the sum of its two
# micro-steps') and the gradient norm it logs before clipping. A random tiny model never writes the R1 format, so the
# reward is a stand-in that varies within groups: the completion's length in characters modulo 3. Truncated
# completions stay in the loss (mask_truncated_completions = false): the tiny model rarely stops.
#   python bench/trl_grad_fixture.py --grpo build/ci/grpo      (the venv of bench/trl_compare.py: torch, trl)
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import trl_compare  # noqa: E402

ROOT = trl_compare.ROOT
MODEL = ROOT / "tests/data/hf/models/tiny-qwen2"
# grpo's --set strings of the fixture (tests/cli_grad.py passes them to `grpo grad`).
SETTINGS = ["chat.template=plain", "task.operations=+", "task.max_digits=1", "task.heldout_size=4", "num_generations=4",
            "per_device_train_batch_size=4", "gradient_accumulation_steps=2", "max_completion_length=40",
            "mask_truncated_completions=false", "loss_type=dapo", "beta=0", "learning_rate=1e-6", "lr_scheduler_type=constant",
            "seed=6"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpo", required=True)
    ap.add_argument("--output", default=str(ROOT / "tests/data/hf/grad_fixture.json"))
    ap.add_argument("--work", default="trl-grad-fixture")
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    config = trl_compare.load_config(None, SETTINGS)
    config.update(reward_funcs=["length_mod_3"], reward_weights=[1.0])
    set_flags = [x for s in SETTINGS for x in ("--set", s)]
    trl_compare.run([args.grpo, "prompts", *set_flags, "--model", str(MODEL), "--count", "2", "--output",
                     str(work / "prompts.jsonl")], work / "prompts.log")
    prompts = [json.loads(line) for line in open(work / "prompts.jsonl")]
    run_args = argparse.Namespace(model=str(MODEL), device="cpu", steps=1, vllm=False)
    captured = trl_compare.trl_run(run_args, config, prompts, work,
                                   rewards={"length_mod_3": lambda completion, reference: float(len(completion) % 3)})
    rows = trl_compare.batch_rows(captured, config, prompts)
    import torch
    import transformers
    import trl
    fixture = {
        "about": "TRL GRPOTrainer's first step on tests/data/hf/models/tiny-qwen2 (fp32, CPU); written by "
                 "bench/trl_grad_fixture.py",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "settings": SETTINGS,
        "rows": [{k: v for k, v in r.items() if k != "trl_advantage"} for r in rows],
        "advantages": [r["trl_advantage"] for r in rows],
        "loss": sum(captured["losses"]),
        "grad_norm": captured["grad_norm"],
    }
    pathlib.Path(args.output).write_text(json.dumps(fixture) + "\n")
    print(f"{args.output}: {len(rows)} rows, loss {fixture['loss']:.8g}, gradient norm {fixture['grad_norm']:.8g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
