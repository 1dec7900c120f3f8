#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Interop test of `grpo loss`, driven as a user would drive it from Python.

Writes batches with numpy in safetensors format, runs the CLI with many option sets, reads the
results back, and compares loss, advantages, gradient and metrics with an independent numpy
implementation of the TRL/veRL formulas written below (group advantages, clipped surrogate,
dual clip, delta, GSPO ratio, KL estimators, rollout IS correction, loss aggregation). Gradients
are central differences of that numpy loss in float64. Also checks error exits.

Usage: cli_interop.py PATH_TO_GRPO. Exits 77 (skipped) without numpy, nonzero on any failure.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import warnings

try:
    import numpy as np
except ImportError:
    print("numpy is not installed: skipping the CLI interop test")
    sys.exit(77)

# --- safetensors in a few lines of numpy (the format: u64 header length, JSON header, raw bytes) ---

DTYPES = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("bool"): "BOOL"}
NUMPY = {"F64": "<f8", "F32": "<f4", "BOOL": "?"}


def save(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype=np.dtype(NUMPY[DTYPES[array.dtype]])).tobytes()
        header[name] = {"dtype": DTYPES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {name: np.frombuffer(data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                                   dtype=NUMPY[v["dtype"]]).reshape(v["shape"]) for name, v in header.items()}
    return tensors, metadata, {name: v["dtype"] for name, v in header.items()}


# --- the reference: TRL / veRL formulas, independently in numpy float64 ---

def grpo_advantages(rewards, group, scale, eps):
    """TRL: A = (r - nanmean_group) / (nanstd + eps), std unbiased; 'batch' keeps the group mean
    and divides by the batch std; 'none' only centres; NaN advantages (unscorable) become 0."""
    g = rewards.reshape(-1, group)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN groups: nanmean/nanstd warn and give NaN, as in TRL
        mean = np.nanmean(g, axis=1, keepdims=True)
        if scale == "group":
            a = (g - mean) / (np.nanstd(g, axis=1, ddof=1, keepdims=True) + eps)
        elif scale == "batch":
            a = (g - mean) / (np.nanstd(rewards, ddof=1) + eps)
        else:
            a = g - mean
    return np.nan_to_num(a, nan=0.0).reshape(-1)


AGGREGATION = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm",
               "dapo": "token-mean"}


def per_token_terms(logp, b, o):
    """Per-token loss L [B,T] and the metric inputs, as TRL/veRL write them."""
    mask = b["mask"]
    old = b.get("old_logprobs", o["logp0"])  # absent: logp held constant (TRL's logp.detach())
    adv = b["adv"] if b["adv"].ndim == 2 else b["adv"][:, None] * np.ones_like(logp)
    bound = o.get("log_ratio_bound", 20.0)
    if o.get("level", "token") == "sequence":  # GSPO: exp of the mean log-ratio over the row
        lengths = np.maximum(mask.sum(1), 1)
        seq = np.clip(((logp - old) * mask).sum(1) / lengths, -bound, bound)
        ratio = np.exp(seq)[:, None] * np.ones_like(logp)
    else:
        ratio = np.exp(np.clip(logp - old, -bound, bound))
    eps_low = o.get("epsilon", 0.2)
    eps_high = o.get("epsilon_high", eps_low)
    capped = np.minimum(ratio, o["delta"]) if "delta" in o else ratio
    pg = np.maximum(-capped * adv, -np.clip(ratio, 1 - eps_low, 1 + eps_high) * adv)
    dual = np.zeros_like(pg)
    if "dual_clip" in o:  # veRL: for A < 0, min(pg, -c A)
        dual = ((adv < 0) & (-o["dual_clip"] * adv < pg)).astype(float)
        pg = np.where(adv < 0, np.minimum(pg, -o["dual_clip"] * adv), pg)
    rho = np.ones_like(logp)
    if "rollout_logprobs" in b:  # TRL vLLM IS correction; the weight multiplies the policy term only
        delta = old - b["rollout_logprobs"]
        if o.get("is_level", "token") == "sequence":
            rho = np.exp(np.clip((delta * mask).sum(1), -bound, bound))[:, None] * np.ones_like(logp)
        else:
            rho = np.exp(np.clip(delta, -bound, bound))
        cap = o.get("is_cap", 3.0)
        rho = np.minimum(rho, cap) if o.get("is_mode", "truncate") == "truncate" else np.where(rho > cap, 0.0, rho)
    loss = rho * pg
    kl = np.zeros_like(logp)
    if "ref_logprobs" in b:
        x = np.clip(b["ref_logprobs"] - logp, -bound, bound)
        kl = {"k1": -x, "k2": 0.5 * x * x, "k3": np.exp(x) - 1 - x}[o.get("kl", "k3")]
        loss = loss + o.get("beta", 0.0) * kl
    if "entropy" in b:
        loss = loss - o.get("entropy_coef", 0.0) * b["entropy"]
    return loss, dict(ratio=ratio, adv=adv, kl=kl, rho=rho, dual=dual, eps_low=eps_low, eps_high=eps_high)


def aggregate(loss, mask, mode, constant):
    rows = mask.shape[0]
    if mode == "token-mean":
        return (loss * mask).sum() / max(mask.sum(), 1.0)
    if mode == "seq-mean-token-mean":
        return ((loss * mask).sum(1) / np.maximum(mask.sum(1), 1.0)).sum() / rows
    if mode == "seq-mean-token-sum":
        return (loss * mask).sum() / rows
    return (loss * mask).sum() / (rows * constant)


def reference(b, o):
    """Loss, per-token loss, gradient (central differences) and metrics of the numpy formulas."""
    mode = o.get("loss_agg_mode", AGGREGATION[o.get("loss_type", "dapo")])
    constant = o.get("max_completion_length", b["logprobs"].shape[1])
    o = dict(o, logp0=b["logprobs"])

    def scalar(logp):
        return aggregate(per_token_terms(logp, b, o)[0], b["mask"], mode, constant)

    logp = b["logprobs"].astype(np.float64)
    loss, parts = per_token_terms(logp, b, o)
    grad = np.zeros_like(logp)
    h = 1e-6
    for index in np.ndindex(*logp.shape):
        up, down = logp.copy(), logp.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (scalar(up) - scalar(down)) / (2 * h)
    mask = b["mask"]
    tokens = max(mask.sum(), 1.0)
    ratio, adv = parts["ratio"], parts["adv"]
    metrics = {
        "clip_fraction_low": (mask * (ratio < 1 - parts["eps_low"]) * (adv < 0)).sum() / tokens,
        "clip_fraction_high": (mask * (ratio > 1 + parts["eps_high"]) * (adv > 0)).sum() / tokens,
        "clip_fraction_dual": (mask * parts["dual"]).sum() / tokens,
        "ratio_mean": (mask * ratio).sum() / tokens,
        "is_weight_mean": (mask * parts["rho"]).sum() / tokens,
    }
    if "ref_logprobs" in b:
        metrics["kl_mean"] = (mask * parts["kl"]).sum() / tokens
    return dict(loss=aggregate(loss, mask, mode, constant), per_token_loss=loss * mask, grad_logprobs=grad,
                advantages=b["adv"], **metrics)


# --- batches ---

def make_batch(seed, rows=8, cols=7, drift=0.4, empty_row=False, nan_rewards=False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, cols + 1, size=rows)
    if empty_row:
        lengths[1] = 0
    mask = (np.arange(cols)[None, :] < lengths[:, None]).astype(np.float64)
    mask[0, min(1, cols - 1)] = 0.0  # a hole in the middle of a row
    # Shifted by the drift so that every log-prob stays below 0, as `grpo loss` requires.
    old = rng.uniform(-3.0, -0.05, size=(rows, cols)) - max(drift, 0.3)
    rewards = rng.choice([0.0, 1.0, 0.5], size=rows)
    rewards[:4] = [1.0, 0.0, 0.0, 1.0]  # the first group is never constant
    if nan_rewards:
        rewards[2] = np.nan
        rewards[5] = np.nan
    return {
        "logprobs": old + rng.uniform(-drift, drift, size=(rows, cols)),
        "old_logprobs": old,
        "ref_logprobs": old + rng.uniform(-0.3, 0.3, size=(rows, cols)),
        "rollout_logprobs": old + rng.uniform(-0.3, 0.3, size=(rows, cols)),
        "entropy": rng.uniform(0.0, 2.0, size=(rows, cols)),
        "mask": mask,
        "rewards": rewards,
        "token_advantages": rng.normal(size=(rows, cols)),
    }


class Runner:
    def __init__(self, grpo, directory):
        self.grpo, self.directory, self.passed, self.failed, self.count = grpo, directory, 0, 0, 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL:", what)

    def close(self, label, got, want, atol, rtol):
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        ok = got.shape == want.shape and np.allclose(got, want, atol=atol, rtol=rtol)
        detail = "" if ok else f"\n  got  {got.ravel()[:8]}\n  want {want.ravel()[:8]}" + (
            f"\n  max |diff| {np.max(np.abs(got - want))}" if got.shape == want.shape else f" shapes {got.shape} {want.shape}")
        self.check(ok, label + detail)

    def run(self, tensors, args):
        self.count += 1
        batch_path = os.path.join(self.directory, f"batch{self.count}.safetensors")
        out_path = os.path.join(self.directory, f"result{self.count}.safetensors")
        save(batch_path, tensors)
        proc = subprocess.run([self.grpo, "loss", "--input", batch_path, "--output", out_path, *args],
                              capture_output=True, text=True)
        return proc, out_path

    def case(self, label, batch, options, args, inputs, dtype=np.float64, use_rewards=True, token_advantages=False):
        """Runs `grpo loss` on the chosen inputs of a batch and compares with the numpy reference."""
        tensors = {name: batch[name].astype(dtype) for name in inputs}
        if token_advantages:
            tensors["advantages"] = batch["token_advantages"].astype(dtype)
        elif use_rewards:
            tensors["rewards"] = batch["rewards"].astype(dtype)
        else:
            tensors["advantages"] = grpo_advantages(batch["rewards"], 4, "group", 1e-4).astype(dtype)
        # The reference sees exactly the values the CLI read (float32 inputs widened to float64).
        b = {name: np.asarray(t, dtype=np.float64) for name, t in tensors.items() if name not in ("rewards", "advantages")}
        b.setdefault("mask", np.ones_like(b["logprobs"]))
        if "rewards" in tensors:
            b["adv"] = grpo_advantages(tensors["rewards"].astype(np.float64), options.get("num_generations", 8),
                                       options.get("scale_rewards", "group"), options.get("adv_epsilon", 1e-4))
        else:
            b["adv"] = tensors["advantages"].astype(np.float64)
        want = reference(b, options)

        proc, out_path = self.run(tensors, args)
        self.check(proc.returncode == 0, f"{label}: exit {proc.returncode}, stderr: {proc.stderr.strip()}")
        if proc.returncode != 0:
            return
        self.check(proc.stdout.startswith("loss "), f"{label}: summary line {proc.stdout!r}")
        got, metadata, dtypes = load(out_path)
        expected_dtype = "F32" if dtype == np.float32 else "F64"
        self.check(all(d == expected_dtype for d in dtypes.values()), f"{label}: output dtypes {set(dtypes.values())}")
        self.check(got["loss"].shape == (), f"{label}: loss shape {got['loss'].shape}")
        mode = options.get("loss_agg_mode", AGGREGATION[options.get("loss_type", "dapo")])
        self.check(metadata.get("loss_agg_mode") == mode, f"{label}: metadata loss_agg_mode {metadata.get('loss_agg_mode')}")
        self.check(metadata.get("loss_type") == options.get("loss_type", "dapo"), f"{label}: metadata loss_type")
        # float32 inputs are computed in float (each elementwise step rounds to float, reductions
        # accumulate in double): agreement to ~1e-6 relative; float64 agrees to rounding, and the
        # reference gradient carries central-difference error of ~1e-9.
        atol, rtol = (2e-6, 2e-5) if dtype == np.float32 else (1e-8, 1e-7)
        for name in ("loss", "advantages", "grad_logprobs", "per_token_loss", "clip_fraction_low", "clip_fraction_high",
                     "clip_fraction_dual", "ratio_mean", "is_weight_mean", "kl_mean"):
            if name in want:
                self.check(name in got, f"{label}: output lacks {name}")
                if name in got:
                    self.close(f"{label}: {name}", got[name], want[name], atol, rtol)
        if "entropy" in tensors:
            self.close(f"{label}: grad_entropy", got["grad_entropy"],
                       -options.get("entropy_coef", 0.0) * self.weights(b["mask"], mode,
                                                                        options.get("max_completion_length", b["mask"].shape[1])),
                       atol, rtol)

    @staticmethod
    def weights(mask, mode, constant):
        rows = mask.shape[0]
        if mode == "token-mean":
            return mask / max(mask.sum(), 1.0)
        if mode == "seq-mean-token-mean":
            return mask / (np.maximum(mask.sum(1), 1.0)[:, None] * rows)
        if mode == "seq-mean-token-sum":
            return mask / rows
        return mask / (rows * constant)

    def error(self, label, tensors, args, fragments):
        proc, out_path = self.run(tensors, args)
        self.check(proc.returncode == 1, f"{label}: exit {proc.returncode} (want 1)")
        message = proc.stderr.strip()
        self.check(message.startswith("grpo loss: "), f"{label}: stderr {message!r}")
        for fragment in fragments:
            self.check(fragment in message, f"{label}: {fragment!r} not in {message!r}")
        self.check(not os.path.exists(out_path), f"{label}: an output file was written")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        r = Runner(sys.argv[1], directory)
        base = make_batch(1)
        lp = ["logprobs", "old_logprobs", "mask"]
        g4 = ["--num-generations", "4"]

        for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
            r.case(f"{loss_type} from rewards", base, dict(loss_type=loss_type, num_generations=4),
                   ["--loss-type", loss_type, *g4], lp)
        r.case("dr_grpo with max_completion_length 10", base,
               dict(loss_type="dr_grpo", num_generations=4, max_completion_length=10),
               ["--loss-type", "dr_grpo", "--max-completion-length", "10", *g4], lp)
        r.case("default options (dapo, G = 8)", base, {}, [], lp)
        for estimator in ("k1", "k2", "k3"):
            r.case(f"beta 0.04 {estimator}", base, dict(beta=0.04, kl=estimator),
                   ["--beta", "0.04", "--kl-estimator", estimator], lp + ["ref_logprobs"], use_rewards=False)
            r.case(f"beta 0.1 {estimator} grpo float32", base, dict(loss_type="grpo", beta=0.1, kl=estimator),
                   ["--loss-type", "grpo", "--beta", "0.1", "--kl-estimator", estimator], lp + ["ref_logprobs"],
                   dtype=np.float32, use_rewards=False)
        wide = make_batch(2, drift=1.6)  # ratios up to e^1.6 ~ 5: the dual clip (c = 3) bites
        r.case("dual clip 3", wide, dict(dual_clip=3.0, num_generations=4), ["--dual-clip", "3", *g4], lp)
        r.case("delta 1.5, epsilon-high 0.28", wide, dict(delta=1.5, epsilon_high=0.28, num_generations=4),
               ["--delta", "1.5", "--epsilon-high", "0.28", *g4], lp)
        r.case("epsilon 0.1 dual clip float32", wide, dict(epsilon=0.1, dual_clip=2.0, num_generations=4),
               ["--epsilon", "0.1", "--dual-clip", "2", *g4], lp, dtype=np.float32)
        r.case("sequence level (GSPO)", base, dict(loss_type="grpo", level="sequence", num_generations=4),
               ["--loss-type", "grpo", "--importance-sampling-level", "sequence", *g4], lp)
        r.case("sequence level dapo float32", wide, dict(level="sequence", num_generations=4),
               ["--importance-sampling-level", "sequence", *g4], lp, dtype=np.float32)
        r.case("advantages [B] given", base, {}, [], lp, use_rewards=False)
        r.case("advantages [B,T] given", base, dict(loss_type="grpo"), ["--loss-type", "grpo"], lp,
               token_advantages=True)
        r.case("no old_logprobs (ratio 1)", base, dict(num_generations=4), g4, ["logprobs", "mask"])
        r.case("no mask", base, dict(loss_type="grpo", num_generations=4), ["--loss-type", "grpo", *g4],
               ["logprobs", "old_logprobs"])
        for scale in ("batch", "none"):
            r.case(f"scale {scale}, NaN rewards", make_batch(3, nan_rewards=True),
                   dict(scale_rewards=scale, num_generations=4, adv_epsilon=1e-3),
                   ["--scale-rewards", scale, "--adv-epsilon", "1e-3", *g4], lp)
        r.case("NaN rewards float32", make_batch(3, nan_rewards=True), dict(num_generations=4), g4, lp,
               dtype=np.float32)
        r.case("empty row, seq-mean-token-sum", make_batch(4, empty_row=True),
               dict(loss_agg_mode="seq-mean-token-sum", num_generations=4),
               ["--loss-agg-mode", "seq-mean-token-sum", *g4], lp)
        r.case("loss-agg-mode seq-mean-token-sum-norm over dapo", base,
               dict(loss_agg_mode="seq-mean-token-sum-norm", num_generations=4, max_completion_length=9),
               ["--loss-agg-mode", "seq-mean-token-sum-norm", "--max-completion-length", "9", *g4], lp)
        r.case("IS token truncate cap 1.1", base, dict(num_generations=4, beta=0.02, is_cap=1.1),
               ["--beta", "0.02", "--is-cap", "1.1", *g4],
               lp + ["ref_logprobs", "rollout_logprobs"])
        r.case("IS sequence_mask cap 2 (TRL spelling)", base,
               dict(num_generations=4, is_mode="mask", is_level="sequence", is_cap=2.0),
               ["--vllm-importance-sampling-mode", "sequence_mask", "--is-cap", "2", *g4], lp + ["rollout_logprobs"])
        r.case("IS token mask float32", base, dict(num_generations=4, is_mode="mask", is_cap=1.2),
               ["--is-mode", "mask", "--is-cap", "1.2", *g4], lp + ["rollout_logprobs"], dtype=np.float32)
        r.case("entropy bonus", base, dict(loss_type="grpo", num_generations=4, entropy_coef=0.01),
               ["--loss-type", "grpo", "--entropy-coef", "0.01", *g4], lp + ["entropy"])

        # A BOOL mask is accepted beside float logprobs.
        bool_batch = {k: base[k] for k in ("logprobs", "old_logprobs")}
        bool_batch["mask"] = base["mask"].astype(bool)
        bool_batch["rewards"] = base["rewards"]
        proc, out_path = r.run(bool_batch, g4)
        r.check(proc.returncode == 0, f"BOOL mask: exit {proc.returncode} {proc.stderr.strip()}")
        if proc.returncode == 0:
            b = {k: base[k] for k in ("logprobs", "old_logprobs", "mask")}
            b["adv"] = grpo_advantages(base["rewards"], 4, "group", 1e-4)
            r.close("BOOL mask: loss", load(out_path)[0]["loss"], reference(b, {})["loss"], 1e-8, 1e-7)

        # Errors: exit 1 with "grpo loss: <argument>: ..." and no output file.
        good = {k: base[k] for k in ("logprobs", "old_logprobs", "mask", "rewards")}
        bad_mask = dict(good, mask=np.where(base["mask"] > 0, 0.5, 0.0))
        r.error("bad mask", bad_mask, g4, ["mask: element 0 is 0.5", "0 or 1"])
        r.error("beta without ref_logprobs", good, ["--beta", "0.1", *g4], ["ref_logprobs: required when beta > 0"])
        r.error("unknown tensor", dict(good, logits=base["logprobs"]), g4, ["unknown tensors 'logits'"])
        r.error("rewards and advantages", dict(good, advantages=base["rewards"]), g4, ["rewards, advantages", "both"])
        r.error("neither rewards nor advantages", {k: good[k] for k in ("logprobs", "mask")}, g4, ["neither"])
        r.error("mixed dtypes", dict(good, old_logprobs=base["old_logprobs"].astype(np.float32)), g4,
                ["old_logprobs: dtype F32 differs from logprobs' F64"])
        r.error("group size does not divide", good, ["--num-generations", "3"],
                ["--num-generations: 3 does not divide the batch of 8 rows"])
        r.error("rewards shape", dict(good, rewards=base["rewards"][:5]), g4, ["rewards: expected shape [8], got [5]"])
        r.error("mask shape", dict(good, mask=base["mask"][:, :3]), g4, ["mask: expected shape [8,7], got [8,3]"])
        r.error("NaN logprobs", dict(good, logprobs=np.where(base["mask"] > 0, base["logprobs"], np.nan)), g4,
                ["logprobs: element", "nan"])
        r.error("unknown loss type", good, ["--loss-type", "ppo"], ["--loss-type: unknown value 'ppo'"])
        r.error("negative epsilon", good, ["--epsilon", "-0.1", *g4], ["--epsilon: must be a finite value >= 0", "-0.1"])
        r.error("contradicting IS level", dict(good, rollout_logprobs=base["rollout_logprobs"]),
                ["--is-mode", "sequence_mask", "--is-level", "token", *g4], ["--is-level"])
        r.error("bad number", good, ["--epsilon", "abc"], ["--epsilon"])
        missing = subprocess.run([r.grpo, "loss", "--input", os.path.join(directory, "absent.safetensors"), "--output",
                                  os.path.join(directory, "x.safetensors")], capture_output=True, text=True)
        r.check(missing.returncode == 1 and missing.stderr.startswith("grpo loss: ") and "absent.safetensors" in
                missing.stderr, f"missing input: {missing.returncode} {missing.stderr!r}")
        with open(os.path.join(directory, "garbage.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", 1000) + b"{")
        garbage = subprocess.run([r.grpo, "loss", "--input", os.path.join(directory, "garbage.safetensors"), "--output",
                                  os.path.join(directory, "x.safetensors")], capture_output=True, text=True)
        r.check(garbage.returncode == 1 and "truncated" in garbage.stderr, f"truncated input: {garbage.stderr!r}")

        # `grpo example` runs and writes both files, and its batch reproduces its table.
        example_dir = os.path.join(directory, "example")
        proc = subprocess.run([r.grpo, "example", "--dir", example_dir], capture_output=True, text=True)
        r.check(proc.returncode == 0 and "dr_grpo" in proc.stdout, f"example: {proc.returncode} {proc.stderr!r}")
        if proc.returncode == 0:
            results, _, _ = load(os.path.join(example_dir, "result.safetensors"))
            batch, _, _ = load(os.path.join(example_dir, "batch.safetensors"))
            b = {k: batch[k].astype(np.float64) for k in ("logprobs", "old_logprobs", "ref_logprobs", "mask")}
            b["adv"] = grpo_advantages(batch["rewards"], 4, "group", 1e-4)
            for loss_type in ("grpo", "dr_grpo"):
                want = reference(b, dict(loss_type=loss_type, beta=0.04))
                r.close(f"example {loss_type} beta 0.04", results[f"{loss_type}/beta_0.04/loss"], want["loss"], 1e-8, 1e-7)

    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
