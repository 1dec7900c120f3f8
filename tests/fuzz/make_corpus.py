#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# tests/fuzz/make_corpus.py: writes the seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/)
# from the project's own fixtures and small files built here with the standard library: safetensors
# (the format's docs: u64 header length, JSON header, data) and GGUF v3 (ggml's docs/gguf.md). Every
# seed is a few KB at most. Run from anywhere: python3 tests/fuzz/make_corpus.py
import json
import shutil
import struct
from pathlib import Path

root = Path(__file__).resolve().parents[2]
out = root / "tests" / "fuzz" / "corpus"
hf_data = root / "tests" / "data" / "hf"


def write(target, name, data):
    path = out / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def copy(target, name, source):
    (out / target).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / target / name)


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def gguf(metadata, tensors, alignment=32):
    def string(s):
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    def value(kind, v):
        if kind == "u32":
            return struct.pack("<II", 4, v)
        if kind == "f32":
            return struct.pack("<If", 6, v)
        if kind == "bool":
            return struct.pack("<IB", 7, v)
        if kind == "str":
            return struct.pack("<I", 8) + string(v)
        if kind == "strs":
            return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(string(s) for s in v)
        if kind == "i32s":
            return struct.pack("<IIQ", 9, 5, len(v)) + b"".join(struct.pack("<i", x) for x in v)
        raise ValueError(kind)

    body = b"".join(string(k) + value(kind, v) for k, (kind, v) in metadata.items())
    infos, data = b"", b""
    for name, (ggml_type, dims, raw) in tensors.items():
        data += b"\0" * (-len(data) % alignment)
        infos += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ggml_type, len(data))
        data += raw
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)) + body + infos
    return head + b"\0" * (-len(head) % alignment) + data


def f32(values):
    return b"".join(struct.pack("<f", v) for v in values)


# safetensors: float, integer and boolean dtypes, metadata, an empty and a scalar tensor.
write("safetensors", "mixed.safetensors", safetensors({
    "w": ("F32", [2, 3], f32([0.5, -1.0, 2.0, 1e-3, 3.25, -0.0])),
    "b": ("BF16", [2], struct.pack("<HH", 0x3F80, 0xC000)),
    "h": ("F16", [1, 2], struct.pack("<HH", 0x3C00, 0x7C00)),
    "ids": ("I64", [3], struct.pack("<qqq", 1, -2, 1 << 40)),
    "mask": ("BOOL", [4], bytes([0, 1, 1, 0])),
    "empty": ("U8", [0, 5], b""),
    "scalar": ("F64", [], struct.pack("<d", 3.0)),
}, {"format": "pt", "note": "seed"}))
write("safetensors", "f8.safetensors", safetensors({
    "e4m3": ("F8_E4M3", [4], bytes([0x38, 0xB8, 0x7E, 0x01])),
    "e5m2": ("F8_E5M2", [4], bytes([0x3C, 0xBC, 0x7B, 0x7C])),
    "u32": ("U32", [2], struct.pack("<II", 7, 1 << 31)),
    "i8": ("I8", [2], struct.pack("<bb", -128, 127)),
}))

# GGUF: llama metadata with a byte-level BPE vocabulary (tokens, types, merges) and tensors of the
# dequantized types F32, F16, BF16, Q8_0 and Q4_0.
tokens = ["<s>", "</s>", "a", "b", "c", "ab", "abc", "\u0120", "\u0120a", "1", "2", "<|im_start|>"]
merges = ["a b", "ab c", "\u0120 a"]
q8_0 = struct.pack("<e", 0.25) + bytes(range(32))
q4_0 = struct.pack("<e", 0.5) + bytes(range(0, 256, 16))
meta = {
    "general.architecture": ("str", "llama"),
    "general.alignment": ("u32", 32),
    "llama.block_count": ("u32", 1),
    "llama.embedding_length": ("u32", 4),
    "llama.feed_forward_length": ("u32", 8),
    "llama.attention.head_count": ("u32", 2),
    "llama.attention.head_count_kv": ("u32", 1),
    "llama.context_length": ("u32", 64),
    "llama.attention.layer_norm_rms_epsilon": ("f32", 1e-5),
    "llama.rope.freq_base": ("f32", 10000.0),
    "tokenizer.ggml.model": ("str", "gpt2"),
    "tokenizer.ggml.pre": ("str", "smollm"),
    "tokenizer.ggml.tokens": ("strs", tokens),
    "tokenizer.ggml.token_type": ("i32s", [3, 3] + [1] * 9 + [4]),
    "tokenizer.ggml.merges": ("strs", merges),
    "tokenizer.ggml.bos_token_id": ("u32", 0),
    "tokenizer.ggml.eos_token_id": ("u32", 1),
    "tokenizer.ggml.add_bos_token": ("bool", 0),
}
write("gguf", "llama_vocab.gguf", gguf(meta, {
    "token_embd.weight": (0, [4, 3], f32([0.1 * i for i in range(12)])),
    "output_norm.weight": (1, [4], struct.pack("<4e", 1.0, 0.5, -2.0, 0.0)),
    "blk.0.attn_norm.weight": (30, [4], struct.pack("<4H", 0x3F80, 0x4000, 0xBF80, 0)),
    "blk.0.ffn_gate.weight": (8, [32, 1], q8_0),
    "blk.0.ffn_up.weight": (2, [32, 1], q4_0),
}))
meta_qwen = {k.replace("llama.", "qwen2."): v for k, v in meta.items()}
meta_qwen["general.architecture"] = ("str", "qwen2")
meta_qwen["tokenizer.ggml.pre"] = ("str", "qwen2")
write("gguf", "qwen2_vocab.gguf", gguf(meta_qwen, {}))
write("gguf", "tensors_only.gguf", gguf({}, {"x": (0, [2, 2], f32([1, 2, 3, 4])), "y": (8, [32], q8_0)}, alignment=32))
copy("gguf", "types.gguf", hf_data / "gguf" / "types.gguf")
# An empty tensor in a file cut inside the padding before the data section (the input fuzz_gguf found).
write("gguf", "empty_tensor_cut_padding.gguf", gguf({}, {"e": (0, [0], b"")})[:-1])

# The training config: the committed example configs.
for name in ("default.toml", "r1_addition.toml"):
    copy("toml_config", name, root / "examples" / "configs" / name)
write("toml_config", "overrides.toml", "seed = 7\nlearning_rate = 1e-5\n[task]\nname = \"countdown\"\n"
      "[sampling]\ntemperature = 0.7\ntop_p = 0.95\n")

# JSONL task data: integer and countdown answers, a number answer, CRLF, a blank line, a BOM.
write("jsonl", "integer.jsonl", '{"prompt": "What is 12 + 30?", "answer": "42"}\n'
      '{"prompt": "What is 7 - 9?", "answer": -2}\n\n{"prompt": "Say 5", "answer": "5", "id": 3}\n')
write("jsonl", "countdown.jsonl", '\ufeff{"prompt": "Use 25 5 4 2 to make 40", "answer": "(25 - 5) * 4 / 2"}\r\n'
      '{"prompt": "Use 3 4 to make 7", "answer": "3 + 4"}\r\n')

# Completions and expressions: R1 format, countdown answers, limits prefix ('#' + four bytes).
write("expression", "r1.txt", "<think>25 - 5 = 20, 20 * 4 = 80, 80 / 2 = 40</think>\n<answer>(25 - 5) * 4 / 2</answer>")
write("expression", "plain.txt", "((1 + 2) * (3 - 4)) / 5 - 6 * 7")
write("expression", "limits.txt", b"#\x40\x08\x08\x12" + b"123456789012345678 * 9 + (1/3)")
write("expression", "integer_answer.txt", "<think>x</think><answer>-12</answer>")

# config.json / generation_config.json: the tiny models' (each layout and architecture).
for model in ("tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-qwen2-bf16"):
    copy("hf_model_config", f"{model}.json", hf_data / "models" / model / "config.json")
copy("hf_model_config", "generation_config.json", hf_data / "models" / "tiny-qwen2" / "generation_config.json")

# tokenizer.json: the small fixtures (Llama and Qwen2 layouts, NFC, Digits, Split, ByteLevel).
copy("hf_tokenizer_json", "tiny_llama.json", hf_data / "gguf" / "tiny_llama_tokenizer.json")
copy("hf_tokenizer_json", "tiny_qwen2.json", hf_data / "gguf" / "tiny_qwen2_tokenizer.json")
copy("hf_tokenizer_json", "tiny_qwen2_model.json", hf_data / "models" / "tiny-qwen2" / "tokenizer.json")

# Text for the fixed tokenizers: the first byte picks smollm2, llama3, qwen2 or roberta.
texts = ["Hello, world! 12345", "caf\u00e9 na\u00efve \u212b \uff21 \U0001F600 \u4e2d\u6587",
         "<|im_start|>user\n2+2?<|im_end|>", "  spaces\tand\r\nlines  ", "<s>hi <mask> there</s>"]
for tokenizer in range(4):
    for i, text in enumerate(texts):
        write("hf_tokenizer_text", f"{tokenizer}_{i}.txt", bytes([tokenizer]) + text.encode())
