#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Bad input to the `grpo` command line is refused up front, naming what is wrong (issue 15).

Each case runs the built `grpo` on one bad setting, option, batch or output path, as a new user
might, and checks that it exits non-zero within a few seconds (so a regression to "trains for
minutes on a broken config" fails here) with a message naming the key, option or tensor. The
cases are the reproductions of issue 15's "Found" items 1-5, 8 and 9. Python 3 standard library
only: the safetensors batches are written with struct and json.

Usage: cli_validation.py PATH_TO_GRPO. Exits nonzero on any failure.
"""
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
R1 = os.path.join(HERE, "..", "examples", "configs", "r1_addition.toml")
TIMEOUT_S = 10  # every refusal happens before any training step; the whole case takes well under 1 s


def save(path, tensors):
    """tensors: name -> (shape, values), stored as F64 (values may be fewer than the shape holds when it has a 0)."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%dd" % len(values), *values)
        header[name] = {"dtype": "F64", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return {name: (v["dtype"], v["shape"], data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for name, v in header.items()}


def write_raw(path, tensors):
    """tensors: name -> (dtype, shape, bytes)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, blob = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Runner:
    def __init__(self, grpo, directory):
        self.grpo, self.directory, self.failed, self.passed = grpo, directory, [], 0

    def run(self, args, timeout=TIMEOUT_S):
        try:
            p = subprocess.run([self.grpo, *args], capture_output=True, text=True, timeout=timeout,
                               cwd=self.directory)
            return p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            return None, ""

    def refuses(self, label, args, fragments):
        """grpo exits 1 (an error, not a crash) within the timeout, its output holding every fragment."""
        rc, out = self.run(args)
        missing = [f for f in fragments if f not in out]
        if rc is None:
            self.fail(label, f"still running after {TIMEOUT_S} s")
        elif rc != 1 or missing:
            self.fail(label, f"exit {rc}, missing {missing} in: {out[-600:]!r}")
        else:
            self.passed += 1

    def check(self, label, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.fail(label, detail)

    def fail(self, label, detail):
        self.failed.append(label)
        print(f"FAIL {label}: {detail}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    grpo = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="grpo-cli-validation-") as directory:
        r = Runner(grpo, directory)
        out = os.path.join(directory, "run")
        train = ["train", "--config", R1, "--output-dir", out]

        # 1. Overflowing derived sizes: per_device_train_batch_size * gradient_accumulation_steps.
        for batch in ("4611686018427387904", "9223372036854775807"):
            r.refuses(f"batch {batch} overflows", [*train, "--set", f"per_device_train_batch_size={batch}", "--set",
                      "gradient_accumulation_steps=4", "--set", "num_generations=2"],
                      ["per_device_train_batch_size", "[1, 65536]", batch])

        # 2. Unbounded memory: sizes past the stated limits.
        r.refuses("sft.batch_size 1e12", [*train, "--set", "sft.batch_size=1000000000000"],
                  ["sft.batch_size", "[1, 65536]", "1000000000000"])
        r.refuses("sft.examples 1e12", [*train, "--set", "sft.examples=1000000000000"], ["sft.examples", "4194304"])
        r.refuses("tokens per step", [*train, "--set", "per_device_train_batch_size=65536", "--set",
                  "gradient_accumulation_steps=1", "--set", "max_completion_length=100000", "--set",
                  "model.max_position_embeddings=200000"], ["tokens per step", "134217728"])
        r.refuses("model parameters", [*train, "--set", "model.hidden_size=65536", "--set",
                  "model.intermediate_size=1000000"], ["parameters", "1073741824"])

        # 3. Values silently ignored or changed.
        r.refuses("train --seed -5", [*train, "--seed", "-5"], ["--seed", "-5"])
        r.refuses("train --seed 2^64", [*train, "--seed", "18446744073709551616"], ["--seed", "18446744073709551616"])
        r.refuses("train --stop-after -7", [*train, "--stop-after", "-7"], ["--stop-after", "-7"])
        example = os.path.join(directory, "example")
        r.refuses("example --seed -1", ["example", "--dir", example, "--seed", "-1"], ["--seed", "-1"])
        r.refuses("example --seed 1e20", ["example", "--dir", example, "--seed", "99999999999999999999"],
                  ["--seed", "99999999999999999999"])
        r.refuses("task.min_digits 2^32+1", [*train, "--set", "task.min_digits=4294967297"],
                  ["task.min_digits", "[1, 9]", "4294967297"])
        r.refuses("--set integer past 2^63", [*train, "--set", "task.min_digits=99999999999999999999"],
                  ["task.min_digits", "out of range", "99999999999999999999"])

        # A tiny model of grpo's own format: the cold start's first step, saved (well under a second).
        made = os.path.join(directory, "made")
        rc, text = r.run(["sft", "--config", R1, "--set", "sft.steps=1", "--set", "eval.size=0", "--output-dir", made],
                         timeout=120)
        model = os.path.join(made, "model")
        r.check("tiny model", rc == 0 and os.path.isdir(model), text[-400:])
        if rc == 0:
            r.refuses("sample -n -3", ["sample", "--model", model, "-n", "-3"], ["--count", "-3"])
            r.refuses("model.init with another hidden_size", [*train, "--model", model, "--set", "model.hidden_size=64"],
                      ["model.hidden_size", "64", "128", "model.init"])
            # --resume with --config: the config is read (over the checkpoint's), so its bad value is refused.
            other = os.path.join(directory, "other.toml")
            with open(other, "w") as f:
                f.write("top_p = 1.5\n")
            r.refuses("--resume with --config reads the config", ["train", "--resume", os.path.join(made, "checkpoint"),
                      "--config", other, "--output-dir", out], ["top_p", "1.5"])
            # A model whose vocabulary is smaller than the tokenizer's (64 characters): 32 rows of embeddings.
            small = os.path.join(directory, "small-vocab")
            os.makedirs(small)
            tensors = read(os.path.join(model, "model.safetensors"))
            dtype, shape, blob = tensors["model.embed_tokens.weight"]
            tensors["model.embed_tokens.weight"] = (dtype, [32, shape[1]], blob[:32 * shape[1] * 4])
            write_raw(os.path.join(small, "model.safetensors"), tensors)
            with open(os.path.join(model, "config.json")) as f:
                config = json.load(f)
            config["vocab_size"] = 32
            with open(os.path.join(small, "config.json"), "w") as f:
                json.dump(config, f)
            for command in ("train", "eval", "sample"):
                args = [*train[1:]] if command == "train" else ["--config", R1]
                r.refuses(f"{command}: vocab_size below the tokenizer's", [command, *args, "--model", small],
                          ["model.vocab_size", "32", "64"])

        # 8. Late validation: refused before the cold start.
        for key, value, fragment in (("top_p", "0", "top_p"), ("top_p", "1.5", "top_p"), ("top_k", "-1", "top_k"),
                                     ("warmup_ratio", "2", "warmup_ratio"),
                                     ("sft.warmup_ratio", "-1", "sft.warmup_ratio"),
                                     ("epsilon", "-0.1", "epsilon: must be"),
                                     ("epsilon_high", "-0.1", "epsilon_high"),
                                     ("eval.temperature", "-1", "eval.temperature"),
                                     ("max_completion_length", "200", "max_completion_length")):
            r.refuses(f"{key}={value}", [*train, "--set", f"{key}={value}"], [fragment, value])
        r.refuses("max_completion_length past the prompt room", [*train, "--set", "max_completion_length=90"],
                  ["max_completion_length", "held-out prompt", "max_position_embeddings = 96"])

        # 9. Messages that name the argument.
        r.refuses("heldout_size -1", [*train, "--set", "task.heldout_size=-1"], ["task.heldout_size", "[1, 4194304]", "-1"])
        r.refuses("--config DIR", ["train", "--config", directory], [directory, "is a directory"])
        r.refuses("unknown command", ["bogus"], ["unknown command 'bogus'", "train", "loss"])
        r.refuses("no command", [], ["a command is required", "train"])
        r.refuses("output_dir empty", ["train", "--config", R1, "--set", "output_dir="], ["output_dir", "empty"])
        r.check("output_dir empty wrote nothing", not os.path.exists(os.path.join(directory, "model")))
        rc, text = r.run(["--version"])
        r.check("--version", rc == 0 and text.strip() != "", f"exit {rc}: {text[-200:]!r}")

        # 4 and 9. `grpo loss` on batches it must refuse. A valid batch: 2 rows x 3 tokens, G = 2.
        good_logprobs = ([2, 3], [-0.5, -1.0, -0.2, -0.7, -0.3, -1.5])

        def loss_case(label, tensors, fragments, extra=()):
            path = os.path.join(directory, "batch.safetensors")
            save(path, tensors)
            r.refuses(label, ["loss", "--input", path, "--output", os.path.join(directory, "result.safetensors"),
                              "--num-generations", "2", *extra], fragments)

        loss_case("log-probs above 0", {"logprobs": ([2, 3], [-0.5, 0.25, -0.2, -0.7, -0.3, -1.5]),
                                        "rewards": ([2], [1.0, 0.0])}, ["logprobs", "element 1", "0.25", "<= 0"])
        loss_case("old log-probs above 0", {"logprobs": good_logprobs, "old_logprobs": ([2, 3], [-1, -1, -1, -1, 2, -1]),
                                            "rewards": ([2], [1.0, 0.0])}, ["old_logprobs", "element 4", "<= 0"])
        loss_case("B = 0", {"logprobs": ([0, 3], []), "rewards": ([0], [])}, ["logprobs", "B = 0"])
        loss_case("T = 0", {"logprobs": ([2, 0], []), "rewards": ([2], [1.0, 0.0])}, ["logprobs", "T = 0"],
                  extra=("--max-completion-length", "5"))
        loss_case("rows 1e9, T = 0", {"logprobs": ([1000000000, 0], []), "advantages": ([1000000000, 0], [])},
                  ["logprobs", "1000000000", "33554432"], extra=("--max-completion-length", "5"))
        loss_case("[2^62, 0]", {"logprobs": ([2 ** 62, 0], []), "advantages": ([2 ** 62, 0], [])},
                  ["logprobs", str(2 ** 62), "33554432"])
        loss_case("rewards +-1e308", {"logprobs": good_logprobs, "rewards": ([2], [1e308, -1e308])},
                  ["rewards", "overflows", "1e+308"])
        loss_case("rewards Inf", {"logprobs": good_logprobs, "rewards": ([2], [float("inf"), 0.0])},
                  ["rewards: element 0", "inf"])
        loss_case("advantages 1e308", {"logprobs": good_logprobs, "advantages": ([2], [1e308, 1e308])},
                  ["advantages", "overflows", "1e+308"], extra=("--loss-type", "dr_grpo", "--max-completion-length", "1"))
        r.refuses("--num-generations -2", ["loss", "--input", "x", "--output", "y", "--num-generations", "-2"],
                  ["--num-generations", "-2"])

        # 5. Output paths: a non-regular file is refused (not replaced), the input is never the output,
        # a symbolic link is written through (the link stays a link, its target gets the result).
        batch = os.path.join(directory, "good.safetensors")
        save(batch, {"logprobs": good_logprobs, "rewards": ([2], [1.0, 0.0])})

        def loss_to(output):
            return ["loss", "--input", batch, "--output", output, "--num-generations", "2"]

        a_directory = os.path.join(directory, "a-directory")
        os.makedirs(a_directory)
        r.refuses("--output a directory", loss_to(a_directory), [a_directory, "a directory", "not a regular file"])
        fifo = os.path.join(directory, "a-fifo")
        os.mkfifo(fifo)
        r.refuses("--output a FIFO", loss_to(fifo), [fifo, "FIFO", "not a regular file"])
        r.check("the FIFO is still a FIFO", stat.S_ISFIFO(os.lstat(fifo).st_mode))
        # A device node like /dev/null (made here, never the real one: an old grpo would replace it).
        device = os.path.join(directory, "a-device")
        try:
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (PermissionError, AttributeError):
            device = None  # not root: mknod is not allowed
        if device:
            r.refuses("--output a device node", loss_to(device), [device, "character device"])
            r.check("the device node is still a device", stat.S_ISCHR(os.lstat(device).st_mode))
        r.refuses("--output the input", loss_to(batch), ["--output", "is the input file"])
        link_to_input = os.path.join(directory, "link-to-input")
        os.symlink(batch, link_to_input)
        r.refuses("--output a link to the input", loss_to(link_to_input), ["--output", "is the input file"])
        target = os.path.join(directory, "target.safetensors")
        with open(target, "w") as f:
            f.write("old")
        link = os.path.join(directory, "link.safetensors")
        os.symlink("target.safetensors", link)
        rc, text = r.run(loss_to(link))
        r.check("--output a symlink: written through", rc == 0 and os.path.islink(link) and
                os.readlink(link) == "target.safetensors" and "logprobs" not in read(target) and "loss" in read(target),
                f"exit {rc}: {text[-300:]!r}")
        example_fifo = os.path.join(directory, "example-fifo")
        os.makedirs(example_fifo)
        os.mkfifo(os.path.join(example_fifo, "batch.safetensors"))
        r.refuses("example --dir with a FIFO", ["example", "--dir", example_fifo], ["batch.safetensors", "FIFO"])

        shutil.rmtree(out, ignore_errors=True)
        print(f"{r.passed} passed, {len(r.failed)} failed" + (": " + ", ".join(r.failed) if r.failed else ""))
        return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
