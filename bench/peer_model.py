#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch-eager peer of bench/model_bench.cpp (issue 4): grpo's native transformer (Llama/Qwen2 family:
RMSNorm, rotate-half RoPE, grouped-query causal attention, SwiGLU, tied or untied LM head) written with
torch ops, on the SAME weights (the model.safetensors + config.json that `grpo_bench_model --export DIR`
writes) and the same shapes (DIR/<size>/shapes.json). First checks that its logits match ours on a fixed
batch (DIR/<size>/check.json: float64 to 1e-9, float32 to 1e-4, both relative to the largest logit), then
times, in float32 with torch.set_num_threads(--threads):
  generate/<size>/b<B>: for each generation shape (rows B = prompts x G, shapes.json "generation", the
                     ones --gen-batches names), prompts x G completions of new_tokens tokens each with a
                     key/value cache (prefill of each distinct prompt once, then one token per row per
                     step, multinomial sampling at temperature 1, no stop token), like model_bench's
                     generate cases;
  train_step/<size>: forward + loss (weighted sum of completion log-probs) + autograd backward over
                     train_rows rows of prompt_length + new_tokens tokens; the optimizer is NOT included.
Prints one JSON line per case: {"side": "torch", "case", "seconds" (median), "tokens_per_second",
"threads", "blas"}. Written to give torch its best eager shot: q/k/v and gate/up are fused into one
matrix product each, GQA shares key/value heads through a view instead of copying them, and the KV cache
is preallocated. Run with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


def warn(message):
    bar = "!" * 78
    print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr, flush=True)


def blas_in_use():
    """The BLAS library torch's matrix products actually load (after one product), from /proc/self/maps.

    Debian's torch links libblas.so.3, the alternative that libopenblas0-pthread provides; without it
    matrix products run on the reference BLAS, about 30 times slower on two cores.
    """
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))
    libraries = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if "blas" in os.path.basename(path).lower():
                    libraries.add(os.path.realpath(path))
    except OSError:
        pass
    alternative = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
    target = os.path.realpath(alternative) if os.path.exists(alternative) else "(no alternative)"
    if not any("openblas" in p for p in libraries):
        warn(f"torch is NOT using OpenBLAS (loaded BLAS: {sorted(libraries) or 'none found'}; "
             f"{alternative} -> {target}). Install libopenblas0-pthread, or the torch timings are "
             f"meaningless (reference BLAS).")
    return ",".join(sorted(libraries)) or "unknown"


def read_safetensors(path):
    """name -> tensor, from the format's 8-byte little-endian header length, JSON header and raw data."""
    with open(path, "rb") as f:
        data = f.read()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_length])
    base = 8 + header_length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        raw = bytearray(data[base + begin:base + end])
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(info["shape"]).clone()
    return tensors


class Model:
    """The architecture of include/grpo/model/reference.hpp in torch ops, on fused weights."""

    def __init__(self, directory, dtype):
        with open(os.path.join(directory, "config.json")) as f:
            self.c = json.load(f)
        c = self.c
        w = {k: v.to(dtype) for k, v in read_safetensors(os.path.join(directory, "model.safetensors")).items()}
        self.dtype = dtype
        self.d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c["num_key_value_heads"]
        self.hd = self.d // self.heads
        self.group = self.heads // self.kv_heads
        self.eps = c["rms_norm_eps"]
        self.embed = w["model.embed_tokens.weight"]
        self.norm = w["model.norm.weight"]
        self.lm_head = self.embed if c["tie_word_embeddings"] else w["lm_head.weight"]
        self.layers = []
        for l in range(c["num_hidden_layers"]):
            p = f"model.layers.{l}."
            bias = None
            if c.get("attention_bias", False):
                bias = torch.cat([w[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            self.layers.append({
                "n1": w[p + "input_layernorm.weight"],
                "qkv": torch.cat([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]),
                "qkv_bias": bias,
                "o": w[p + "self_attn.o_proj.weight"],
                "n2": w[p + "post_attention_layernorm.weight"],
                "gate_up": torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]),
                "down": w[p + "mlp.down_proj.weight"],
            })
        positions = c["max_position_embeddings"]
        inverse = c["rope_theta"] ** (-torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd)
        angles = torch.outer(torch.arange(positions, dtype=torch.float64), inverse)
        angles = torch.cat([angles, angles], -1)
        self.cos, self.sin = angles.cos().to(dtype), angles.sin().to(dtype)

    def parameters(self):
        out = [self.embed, self.norm] + ([] if self.lm_head is self.embed else [self.lm_head])
        for layer in self.layers:
            out += [v for v in layer.values() if v is not None]
        return out

    def rms_norm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def rope(self, x, cos, sin):
        """x [..., tokens, head_dim]; cos, sin [tokens, head_dim] (rotate-half convention)."""
        half = self.hd // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def qkv(self, layer, h, cos, sin):
        """h [B, L, d] -> q [B, H, L, hd], k and v [B, KV, L, hd], RoPE applied."""
        b, n, _ = h.shape
        qkv = F.linear(h, layer["qkv"], layer["qkv_bias"])
        q_dim, kv_dim = self.heads * self.hd, self.kv_heads * self.hd
        q = qkv[..., :q_dim].view(b, n, self.heads, self.hd).transpose(1, 2)
        k = qkv[..., q_dim:q_dim + kv_dim].view(b, n, self.kv_heads, self.hd).transpose(1, 2)
        v = qkv[..., q_dim + kv_dim:].view(b, n, self.kv_heads, self.hd).transpose(1, 2)
        return self.rope(q, cos, sin), self.rope(k, cos, sin), v

    def attend(self, q, k, v, mask):
        """q [B, H, L, hd] against k, v [B, KV, S, hd]; head h reads kv head h // group through a view
        (query heads of one group stacked along the rows); mask [L, S] additive or None."""
        b, _, n, _ = q.shape
        s = k.shape[2]
        scores = torch.matmul(q.reshape(b, self.kv_heads, self.group * n, self.hd), k.transpose(-1, -2))
        scores = scores * (1.0 / math.sqrt(self.hd))
        if mask is not None:
            scores = (scores.view(b, self.kv_heads, self.group, n, s) + mask).view(b, self.kv_heads, self.group * n, s)
        out = torch.matmul(torch.softmax(scores, -1), v)  # [B, KV, group * L, hd]
        return out.view(b, self.heads, n, self.hd).transpose(1, 2).reshape(b, n, self.heads * self.hd)

    def mlp(self, layer, x):
        h2 = self.rms_norm(x, layer["n2"])
        gate, up = F.linear(h2, layer["gate_up"]).chunk(2, -1)
        return x + F.linear(F.silu(gate) * up, layer["down"])

    def hidden(self, tokens, cache=None):
        """Final-normed hidden states [B, L, d] of tokens [B, L] at positions 0..L-1 (causal). With
        cache (a list of per-layer [k, v] buffers [B, KV, capacity, hd]), stores the keys and values."""
        b, n = tokens.shape
        cos, sin = self.cos[:n], self.sin[:n]
        mask = torch.full((n, n), float("-inf"), dtype=self.dtype).triu(1)
        x = F.embedding(tokens, self.embed)
        for l, layer in enumerate(self.layers):
            q, k, v = self.qkv(layer, self.rms_norm(x, layer["n1"]), cos, sin)
            if cache is not None:
                cache[l][0][:, :, :n] = k
                cache[l][1][:, :, :n] = v
            x = x + F.linear(self.attend(q, k, v, mask), layer["o"])
            x = self.mlp(layer, x)
        return self.rms_norm(x, self.norm)

    def decode_step(self, tokens, position, cache):
        """Logits [B, V] of one new token per row at `position`, reading and extending the cache."""
        cos, sin = self.cos[position:position + 1], self.sin[position:position + 1]
        x = F.embedding(tokens, self.embed)  # [B, 1, d]
        for l, layer in enumerate(self.layers):
            q, k, v = self.qkv(layer, self.rms_norm(x, layer["n1"]), cos, sin)
            keys, values = cache[l]
            keys[:, :, position:position + 1] = k
            values[:, :, position:position + 1] = v
            attn = self.attend(q, keys[:, :, :position + 1], values[:, :, :position + 1], None)
            x = x + F.linear(attn, layer["o"])
            x = self.mlp(layer, x)
        return F.linear(self.rms_norm(x[:, -1], self.norm), self.lm_head)

    @torch.inference_mode()
    def generate(self, prompts, group_size, new_tokens, temperature, generator):
        """prompts [P, p] (one length) -> [P * G, new_tokens] sampled ids; rows [k G, (k+1) G) answer prompt k."""
        count, p = prompts.shape
        capacity = p + new_tokens
        shape = (count, self.kv_heads, capacity, self.hd)
        cache = [[torch.empty(shape, dtype=self.dtype), torch.empty(shape, dtype=self.dtype)] for _ in self.layers]
        logits = F.linear(self.hidden(prompts, cache)[:, -1], self.lm_head)
        # Each distinct prompt is prefilled once, then its cache is shared by its G rows.
        cache = [[k.repeat_interleave(group_size, 0), v.repeat_interleave(group_size, 0)] for k, v in cache]
        logits = logits.repeat_interleave(group_size, 0)
        out = []
        for i in range(new_tokens):
            probs = torch.softmax(logits / temperature, -1)
            token = torch.multinomial(probs, 1, generator=generator)
            out.append(token)
            if i + 1 < new_tokens:
                logits = self.decode_step(token, p + i, cache)
        return torch.cat(out, 1)

    def completion_logits(self, prompt, completion):
        """Logits [c, V] predicting completion from prompt ++ completion[:-1] (one row)."""
        fed = torch.tensor([prompt + completion[:-1]], dtype=torch.long)
        h = self.hidden(fed)[0, len(prompt) - 1:]
        return F.linear(h, self.lm_head)


def check_logits(directory):
    """Our float and double logits (check.json) against this model's, from the full forward and from the
    cached decoding path; returns the scaled errors of the full forward."""
    with open(os.path.join(directory, "check.json")) as f:
        check = json.load(f)
    errors = {}
    for dtype, key, tolerance in ((torch.float64, "logits_double", 1e-9), (torch.float32, "logits_float", 1e-4)):
        model = Model(directory, dtype)
        ours = torch.tensor(check[key], dtype=torch.float64)
        vocab = model.c["vocab_size"]
        t = max(len(c) for c in check["completions"])
        ours = ours.view(len(check["prompts"]), t, vocab)
        worst, scale = 0.0, 0.0
        with torch.no_grad():
            for r, (prompt, completion) in enumerate(zip(check["prompts"], check["completions"])):
                theirs = model.completion_logits(prompt, completion).double()
                worst = max(worst, (theirs - ours[r, :len(completion)]).abs().max().item())
                scale = max(scale, theirs.abs().max().item())
        errors[key] = worst / scale
        # The cached decoding path (prefill, then one token at a time) gives the same logits.
        with torch.inference_mode():
            prompt, completion = check["prompts"][0], check["completions"][0]
            capacity = len(prompt) + len(completion)
            shape = (1, model.kv_heads, capacity, model.hd)
            cache = [[torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype)] for _ in model.layers]
            steps = [F.linear(model.hidden(torch.tensor([prompt]), cache)[:, -1], model.lm_head)]
            for i, token in enumerate(completion[:-1]):
                steps.append(model.decode_step(torch.tensor([[token]]), len(prompt) + i, cache))
            decoded = torch.cat(steps).double()
            worst = (decoded - ours[0, :len(completion)]).abs().max().item()
        if not worst <= tolerance * scale:
            raise SystemExit(f"peer_model.py: {directory}: the cached decoding path's logits differ from ours by "
                             f"{worst / scale:.3g} relative ({key}, tolerance {tolerance})")
        if not worst <= tolerance * scale:
            raise SystemExit(f"peer_model.py: {directory}: {key} differ from torch's by {worst / scale:.3g} "
                             f"relative (tolerance {tolerance}): the two models are not the same")
    return errors


def timed(fn, min_time, repeats):
    """Median seconds of fn over at least `repeats` runs and `min_time` seconds, after one warm-up run."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_size(directory, name, threads, blas, min_time, repeats, gen_batches):
    with open(os.path.join(directory, "shapes.json")) as f:
        s = json.load(f)
    errors = check_logits(directory)
    print(json.dumps({"side": "torch", "case": f"check/{name}", "scaled_error": errors}), flush=True)
    known = {shape["rows"] for shape in s["generation"]}
    if gen_batches is not None and not gen_batches <= known:
        raise SystemExit(f"peer_model.py: --gen-batches: {sorted(gen_batches - known)} not among the generation "
                         f"batches of {directory}/shapes.json {sorted(known)}")
    model = Model(directory, torch.float32)
    vocab = model.c["vocab_size"]
    for shape in s["generation"]:
        if gen_batches is not None and shape["rows"] not in gen_batches:
            continue
        gen = torch.Generator().manual_seed(shape["rows"])
        prompts = torch.randint(vocab, (shape["prompts"], s["prompt_length"]), generator=gen)
        seconds = timed(lambda: model.generate(prompts, shape["group_size"], s["new_tokens"], 1.0, gen),
                        min_time, repeats)
        print(json.dumps({"side": "torch", "case": f"generate/{name}/b{shape['rows']}", "seconds": seconds,
                          "tokens_per_second": shape["rows"] * s["new_tokens"] / seconds, "threads": threads,
                          "blas": blas}), flush=True)

    gen = torch.Generator().manual_seed(1)
    rows, p, c = s["train_rows"], s["prompt_length"], s["new_tokens"]
    fed = torch.randint(vocab, (rows, p + c - 1), generator=gen)
    targets = torch.randint(vocab, (rows, c, 1), generator=gen)
    weights = (torch.rand(rows, 1, generator=gen) * 2 - 1).expand(rows, c) / (rows * c)
    params = model.parameters()
    for t in params:
        t.requires_grad_(True)

    def step():
        for t in params:
            t.grad = None
        h = model.hidden(fed)[:, p - 1:]
        logp = torch.log_softmax(F.linear(h, model.lm_head), -1).gather(-1, targets).squeeze(-1)
        (logp * weights).sum().backward()

    seconds = timed(step, min_time, repeats)
    print(json.dumps({"side": "torch", "case": f"train_step/{name}", "seconds": seconds,
                      "tokens_per_second": rows * (p + c - 1) / seconds, "threads": threads, "blas": blas}),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="the directory `grpo_bench_model --export` wrote")
    parser.add_argument("--sizes", default="main,large", help="comma-separated model sizes (subdirectories)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (ours: same)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds to time each case at least")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each case at least")
    parser.add_argument("--gen-batches", help="comma-separated generation batch sizes (rows) to time, "
                        "of those in shapes.json, or none (the train step only); default: all")
    parser.add_argument("--check-only", action="store_true", help="only compare the logits")
    args = parser.parse_args()
    if args.gen_batches is None:
        gen_batches = None
    elif args.gen_batches == "none":
        gen_batches = set()
    else:
        gen_batches = {int(b) for b in args.gen_batches.split(",")}
    torch.set_num_threads(args.threads)
    blas = blas_in_use()
    for name in args.sizes.split(","):
        directory = os.path.join(args.directory, name)
        if args.check_only:
            print(json.dumps({"side": "torch", "case": f"check/{name}", "scaled_error": check_logits(directory)}))
        else:
            bench_size(directory, name, args.threads, blas, args.min_time, args.repeats, gen_batches)


if __name__ == "__main__":
    main()
