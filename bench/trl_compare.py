#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# bench/trl_compare.py: grpo's GRPO step beside TRL's GRPOTrainer (no vLLM unless --vllm) on the same model, task
# prompts, reward functions and settings, in one process run:
#   1. `grpo prompts` writes the config's training prompts in the order `grpo train` draws them (chat template
#      applied, as token ids); TRL reads them in that order (shuffle_dataset=False), as text whose tokens it must
#      reproduce exactly (checked).
#   2. TRL trains --steps steps; its first generation batch (prompt and completion ids, masks, rewards, advantages),
#      the loss of its first optimizer step (the sum of its micro-steps' losses) and the gradient norm it logs
#      (before clipping) are kept, with per-step wall times and peak memory.
#   3. `grpo grad` computes grpo's loss and gradient norm of one update on that same batch and the same weights,
#      through the trainer's own update (examples/cli/batch_commands.cpp), for each --policies; they must agree with
#      TRL's within --tolerance (relative; 1e-3 by default, meant for fp32 on the CPU: bf16 on a GPU gives ~1e-2).
#   4. `grpo train` runs the same number of GRPO steps from the same weights (sft.steps=0); its per-step wall times
#      (metrics.jsonl's time/step_s) and peak memory are set beside TRL's.
# The rewards are this file's Python copies of include/grpo/tasks/rewards.hpp: format_reward (has_r1_format),
# accuracy_reward and partial_accuracy_reward (partial = 0.5) with task.hpp's integer checker; the config's
# reward_funcs and reward_weights pick them, as they pick grpo's. Settings come from the config as grpo reads it:
# examples/configs/default.toml (grpo's defaults), the --config file, then --set (the same strings grpo gets).
# The step's prompts, group size, completion length, learning rate and schedule, Adam settings, clipping, loss type,
# beta, epsilon(s), scale_rewards, mask_truncated_completions and seed map to GRPOConfig fields of the same name;
# dynamic_sampling (TRL has none) must be off. Needs torch, transformers and trl (pip; never used by CI):
#   python bench/trl_compare.py --grpo build/ci/grpo --model DIR --config examples/configs/r1_smollm2.toml \
#     --device cpu|cuda --steps N [--set k=v ...] [--policies torch,native] [--work DIR] [--vllm] [--json OUT]
# Exit status: 0 when every loss and gradient norm agree within the tolerance, 1 otherwise.
import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import threading
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# ---- grpo's rewards (include/grpo/tasks/rewards.hpp, task.hpp), for TRL ----------------------------------------------
BLANKS = " \t\n\r"
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"


def _blank(s):
    return all(c in BLANKS for c in s)


def has_r1_format(c):
    """B <think> T </think> B <answer> A </answer> B, each tag once, A not blank (rewards.hpp has_r1_format)."""
    if any(c.count(tag) != 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return False
    t0, t1, a0, a1 = (c.find(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
    if not t0 < t1 < a0 < a1:
        return False
    return (_blank(c[:t0]) and _blank(c[t1 + len(THINK_CLOSE):a0]) and _blank(c[a1 + len(ANSWER_CLOSE):])
            and not _blank(c[a0 + len(ANSWER_OPEN):a1]))


def extract_answer(c):
    """The blank-trimmed text of the one <answer> block; None unless each answer tag occurs once, in order."""
    if c.count(ANSWER_OPEN) != 1 or c.count(ANSWER_CLOSE) != 1:
        return None
    begin, end = c.find(ANSWER_OPEN) + len(ANSWER_OPEN), c.find(ANSWER_CLOSE)
    return None if end < begin else c[begin:end].strip(BLANKS)


def _all_digits(s):
    return s != "" and all("0" <= ch <= "9" for ch in s)


def canonical_integer(text):
    text = text.strip(BLANKS)
    negative = False
    if text[:1] in ("+", "-"):
        negative, text = text[0] == "-", text[1:]
    if not _all_digits(text):
        return None
    text = text.lstrip("0") or "0"
    return "0" if text == "0" else ("-" if negative else "") + text


def check_integer_answer(reference, candidate):
    gold = canonical_integer(reference)
    if gold is None:
        return None
    if candidate is None:
        return False
    answer = candidate.strip(BLANKS)
    magnitude = answer[1:] if answer[:1] == "-" else answer
    if not _all_digits(magnitude) or (len(magnitude) > 1 and magnitude[0] == "0") or answer == "-0":
        return False
    return answer == gold


def accuracy_reward(completion, reference):
    verdict = check_integer_answer(reference, extract_answer(completion))
    return None if verdict is None else float(verdict)


def partial_accuracy_reward(completion, reference, partial=0.5):
    answer = extract_answer(completion)
    verdict = check_integer_answer(reference, answer)
    if verdict is None or verdict:
        return None if verdict is None else 1.0
    gold = canonical_integer(reference)
    if answer is None or gold is None or not check_integer_answer(answer, answer):
        return 0.0
    matches = sum(answer[-i] == gold[-i] for i in range(1, min(len(answer), len(gold)) + 1))
    return partial * matches / max(len(answer), len(gold))


REWARDS = {
    "format": lambda completion, reference: float(has_r1_format(completion)),
    "accuracy": accuracy_reward,
    "partial_accuracy": partial_accuracy_reward,
}


# ---- the config as grpo reads it ----------------------------------------------------------------------------------
def flatten(table, prefix=""):
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def load_config(path, sets):
    config = flatten(tomllib.loads((ROOT / "examples/configs/default.toml").read_text()))
    if path:
        config.update(flatten(tomllib.loads(pathlib.Path(path).read_text())))
    for item in sets:
        key, _, text = item.partition("=")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        config[key] = value
    return config


# ---- measuring ----------------------------------------------------------------------------------------------------
class GpuMemoryPoller:
    """nvidia-smi's used memory of device 0 every 100 ms (the whole device: every process, CUDA contexts included)."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                text = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                       "-i", "0"], capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(text.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_gib(self):
        return max(self.samples) / 1024 if self.samples else float("nan")


def run(cmd, log):
    with open(log, "w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"trl_compare: {' '.join(map(str, cmd))} exited with {result.returncode}; see {log}:\n"
                 + pathlib.Path(log).read_text()[-3000:])


def relative(ours, theirs):
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


# ---- TRL ------------------------------------------------------------------------------------------------------------
def trl_run(args, config, prompts, work, rewards=REWARDS):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    assert not config["dynamic_sampling"], "dynamic_sampling = true has no TRL counterpart: --set dynamic_sampling=false"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # The prompt as text whose tokens are grpo's ids (ChatML markers are special tokens, so they round-trip).
    rows = [{"prompt": tokenizer.decode(p["prompt_ids"], skip_special_tokens=False), "answer": p["answer"]}
            for p in prompts]
    captured = {"rewards": None, "batch": None, "losses": [], "grad_norm": None, "step_times": [], "micro": 0}

    def make_reward(name):
        def reward(prompts, completions, answer, **kwargs):
            values = [rewards[name](c, a) for c, a in zip(completions, answer)]
            if captured["rewards"] is not None and name not in captured["rewards"]:
                captured["rewards"][name] = values
            return values
        reward.__name__ = name
        return reward

    class Capture(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            if captured["batch"] is None:
                captured["rewards"] = {}
            out = super()._generate_and_score_completions(inputs)
            if captured["batch"] is None:
                captured["batch"] = {k: v.detach().cpu() for k, v in out.items() if torch.is_tensor(v)}
                captured["eos"] = set(self.eos_token_ids)
            return out

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if captured["micro"] < self.args.gradient_accumulation_steps:
                captured["losses"].append(loss.item())
            captured["micro"] += 1
            return loss

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            captured["step_times"].append(time.perf_counter() - self.t0)

        def on_log(self, a, state, control, logs=None, **kw):
            if captured["grad_norm"] is None and logs and "grad_norm" in logs:
                captured["grad_norm"] = float(logs["grad_norm"])
                captured["first_log"] = dict(logs)

    cuda = args.device.startswith("cuda")
    c = config
    # transformers 5.x reads a float warmup_steps < 1 as the ratio; older versions have warmup_ratio.
    fields = GRPOConfig.__dataclass_fields__
    warmup = {"warmup_ratio": c["warmup_ratio"]} if "warmup_ratio" in fields else {"warmup_steps": c["warmup_ratio"]}
    trl_args = GRPOConfig(
        output_dir=str(work / "trl"), max_steps=args.steps, seed=int(c["seed"]),
        learning_rate=c["learning_rate"], lr_scheduler_type=c["lr_scheduler_type"], **warmup,
        adam_beta1=c["adam_beta1"], adam_beta2=c["adam_beta2"], adam_epsilon=c["adam_epsilon"],
        weight_decay=c["weight_decay"], max_grad_norm=c["max_grad_norm"],
        per_device_train_batch_size=int(c["per_device_train_batch_size"]),
        gradient_accumulation_steps=int(c["gradient_accumulation_steps"]),
        num_generations=int(c["num_generations"]), max_completion_length=int(c["max_completion_length"]),
        temperature=c["temperature"], top_p=c["top_p"], top_k=int(c["top_k"]),
        beta=c["beta"], epsilon=c["epsilon"], epsilon_high=c.get("epsilon_high", c["epsilon"]),
        loss_type=c["loss_type"], scale_rewards=c["scale_rewards"], num_iterations=int(c["num_iterations"]),
        mask_truncated_completions=c["mask_truncated_completions"], reward_weights=list(c["reward_weights"]),
        shuffle_dataset=False, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        bf16=cuda, use_cpu=not cuda, use_vllm=args.vllm, dataloader_num_workers=0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = Capture(model=model, args=trl_args, processing_class=tokenizer,
                      reward_funcs=[make_reward(n) for n in c["reward_funcs"]],
                      train_dataset=Dataset.from_list(rows), callbacks=[Timer()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with GpuMemoryPoller() if cuda else _null() as poller:
        trainer.train()
    wall = time.perf_counter() - t0
    memory = {"rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if cuda:
        memory.update(allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                      reserved_gib=torch.cuda.max_memory_reserved() / 2**30, device_gib=poller.peak_gib())
    captured.update(wall=wall, memory=memory, tokenizer=tokenizer)
    return captured


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def batch_rows(captured, config, prompts):
    """TRL's first generation batch as `grpo grad` input rows (groups of num_generations consecutive rows)."""
    b = captured["batch"]
    g = int(config["num_generations"])
    pad_free = [[int(t) for t, m in zip(ids, mask) if m] for ids, mask in zip(b["prompt_ids"], b["prompt_mask"])]
    weights = list(config["reward_weights"])
    rewards = captured["rewards"]
    rows = []
    for r in range(len(pad_free)):
        expected = prompts[r // g]["prompt_ids"]
        if pad_free[r] != expected:
            sys.exit(f"trl_compare: TRL's prompt {r // g} tokenizes to {pad_free[r][:12]}..., grpo's is "
                     f"{expected[:12]}...: the prompts differ, the comparison would be meaningless")
        ids, mask = b["completion_ids"][r].tolist(), b["completion_mask"][r].tolist()
        length = int(sum(mask))
        # mask_truncated_completions zeroes a truncated row's mask: then all max_completion_length ids are its own.
        tokens = ids[:length] if length > 0 else ids[:int(config["max_completion_length"])]
        stopped = tokens[-1] in captured["eos"]
        parts = [rewards[name][r] for name in config["reward_funcs"]]
        if None in parts:
            sys.exit(f"trl_compare: row {r} is unscorable (a reward returned None); grpo grad takes finite rewards")
        reward = sum(w * p for w, p in zip(weights, parts))
        rows.append({"prompt_ids": pad_free[r], "completion_ids": tokens, "stopped": stopped, "reward": reward,
                     "trl_advantage": float(b["advantages"][r])})
    return rows


def main():
    ap = argparse.ArgumentParser(description="grpo's GRPO step beside TRL's GRPOTrainer (see the top of the file)")
    ap.add_argument("--grpo", required=True, help="the grpo binary (built with LibTorch for --policies torch)")
    ap.add_argument("--model", required=True, help="Hugging Face model directory both start from")
    ap.add_argument("--config", default=str(ROOT / "examples/configs/r1_smollm2.toml"))
    ap.add_argument("--set", action="append", default=[], help="key=value, as grpo's --set (repeatable)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--steps", type=int, default=4, help="GRPO steps of each (the first is left out of the timing)")
    ap.add_argument("--policies", default="torch", help="grpo policies for the gradient check: torch,native")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="relative, for the loss and the gradient norm")
    ap.add_argument("--work", default="trl-compare", help="working directory (prompts, batch, runs, logs)")
    ap.add_argument("--vllm", action="store_true", help="TRL generates with vLLM (colocate), where it is installed")
    ap.add_argument("--json", help="write the measured numbers here")
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sets = args.set + ["sft.steps=0", f"max_steps={args.steps}"]
    config = load_config(args.config, sets)
    set_flags = [x for s in sets for x in ("--set", s)]
    common = [*set_flags, "--config", args.config, "--model", args.model]
    prompts_per_step = int(config["per_device_train_batch_size"]) * int(config["gradient_accumulation_steps"]) // int(
        config["num_generations"])

    run([args.grpo, "prompts", *common, "--count", str(args.steps * prompts_per_step), "--output",
         str(work / "prompts.jsonl")], work / "prompts.log")
    prompts = [json.loads(line) for line in open(work / "prompts.jsonl")]

    trl = trl_run(args, config, prompts, work)
    rows = batch_rows(trl, config, prompts)
    with open(work / "batch.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if k != "trl_advantage"}) + "\n")
    trl_loss = sum(trl["losses"])

    results, ok = {"trl": {"loss": trl_loss, "grad_norm": trl["grad_norm"]}}, True
    print(f"\nfirst step of TRL ({len(rows)} completions, {sum(len(r['completion_ids']) for r in rows)} tokens, "
          f"{sum(not r['stopped'] for r in rows)} truncated) fed to grpo grad on the same weights, {args.device}:\n")
    print("| | loss | gradient norm (before clipping) | max abs advantage diff |")
    print("| --- | --- | --- | --- |")
    print(f"| TRL {__import__('trl').__version__} | {trl_loss:.8g} | {trl['grad_norm']:.8g} | |")
    for policy in args.policies.split(","):
        out = work / f"grad_{policy}.json"
        run([args.grpo, "grad", *common, "--policy", policy, "--device", args.device if policy == "torch" else "cpu",
             "--input", str(work / "batch.jsonl"), "--output", str(out)], work / f"grad_{policy}.log")
        ours = json.loads(out.read_text())
        adv = max(abs(a - r["trl_advantage"]) for a, r in zip(ours["advantages"], rows))
        loss_rel, norm_rel = relative(ours["loss"], trl_loss), relative(ours["grad_norm"], trl["grad_norm"])
        # A loss near 0 (advantages cancel within each group) has no meaningful relative error: 1e-7 absolute.
        passed = (loss_rel <= args.tolerance or abs(ours["loss"] - trl_loss) <= 1e-7) and norm_rel <= args.tolerance
        ok = ok and passed and adv <= 1e-4
        results[f"grpo_{policy}"] = {"loss": ours["loss"], "grad_norm": ours["grad_norm"], "loss_rel": loss_rel,
                                     "grad_norm_rel": norm_rel, "advantage_max_abs_diff": adv, "passed": passed}
        print(f"| grpo --policy {policy} | {ours['loss']:.8g} (rel {loss_rel:.1e}) | {ours['grad_norm']:.8g} "
              f"(rel {norm_rel:.1e}) | {adv:.1e} | {'ok' if passed and adv <= 1e-4 else 'DIFFERENT'}")

    # grpo train: the same steps from the same weights.
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    with GpuMemoryPoller() if cuda else _null() as poller:
        run([args.grpo, "train", *common, "--policy", "torch", "--device", args.device, "--overwrite",
             "--output-dir", str(work / "grpo")], work / "grpo_train.log")
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in open(work / "grpo" / "metrics.jsonl") if line.strip()]
    ours_steps = [r["time/step_s"] for r in records if "actor/loss" in r]
    ours_len = statistics.fmean(r["response_length/mean"] for r in records if "actor/loss" in r)
    ours_memory = {"rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}
    if cuda:
        ours_memory["device_gib"] = poller.peak_gib()
    trl_len = trl.get("first_log", {}).get("completions/mean_length", float("nan"))

    def timing(steps):
        timed = steps[1:] if len(steps) > 1 else steps
        return statistics.median(timed), statistics.fmean(timed)

    trl_median, trl_mean = timing(trl["step_times"])
    ours_median, ours_mean = timing(ours_steps)
    print(f"\nper-step wall time, {args.steps} steps each (the first left out), same prompts and settings, {args.device}:\n")
    print("| | median s/step | mean s/step | peak memory | mean completion length |")
    print("| --- | --- | --- | --- | --- |")

    def memory_text(m):
        if "device_gib" in m:
            return (f"{m['device_gib']:.2f} GiB device (nvidia-smi)"
                    + (f", {m['reserved_gib']:.2f} GiB reserved by torch" if "reserved_gib" in m else ""))
        return f"{m['rss_gib']:.2f} GiB RSS"

    print(f"| TRL {'+ vLLM ' if args.vllm else ''}| {trl_median:.3f} | {trl_mean:.3f} | {memory_text(trl['memory'])} "
          f"| {trl_len:.1f} (step 1) |")
    print(f"| grpo (LibTorch policy) | {ours_median:.3f} | {ours_mean:.3f} | {memory_text(ours_memory)} | "
          f"{ours_len:.1f} |")
    print(f"\nspeed-up (TRL median / grpo median): {trl_median / ours_median:.2f}x (goal >= 3x without vLLM)")
    results.update(trl_steps=trl["step_times"], grpo_steps=ours_steps, trl_memory=trl["memory"],
                   grpo_memory=ours_memory, speedup=trl_median / ours_median, trl_wall=trl["wall"], grpo_wall=wall)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
