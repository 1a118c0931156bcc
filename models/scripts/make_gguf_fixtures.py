#!/usr/bin/env python3
"""Build the GGUF test fixtures in models/gguf-fixtures/ with gguf-py (llama.cpp's Python package).

    python models/scripts/make_gguf_fixtures.py [ASSETS_DIR [LLAMA_TOKENIZE]]

Always writes quants.gguf: for each storage type perplex reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) a [2, 256] tensor named after the type, plus, as a plain
F32 tensor "<type>.expected", the values gguf-py's `gguf.quants.dequantize` gives for it. Quantized
blocks are random bytes (every bit pattern of the packed values and scales is exercised) with random
finite f16 scales. "q8_0_exact" is a Q8_0 tensor whose values are all exact in f16. The metadata holds
one key of every GGUF value type ("test.*"), including arrays of strings and arrays of arrays.

With ASSETS_DIR (the cache of tests/assets/fetch) it also writes reference.json: for each real
GGUF model there, every tensor under its Hugging Face name with its shape and the CRC-32 of its
little-endian float32 values in the Hugging Face layout (gguf-py dequantization; llama q/k rows
un-permuted and Gemma norms minus 1, as transformers does), and, with LLAMA_TOKENIZE (llama.cpp's
llama-tokenize binary), the ids llama.cpp gives for a few texts (no BOS added, special tokens parsed).

Needs: pip install gguf numpy. Deterministic (fixed seed).
"""
import json
import os
import subprocess
import sys
import zlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "gguf-fixtures")

# Byte offsets of the f16 scales in each block, set to finite values (random bytes could be inf/NaN).
SCALES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

TEXTS = [
    "Hello world",
    " leading space and  double  spaces",
    "Numbers: 1234567 and 3.14159, year 2024.",
    "Unicode: naïve café, Σ≠∞, 日本語のテキスト, emoji 🎉👍🏽",
    "Line one\nLine two\n\n\tTabbed  line\r\n",
    "def f(x):\n    return x ** 2  # square\n",
    "I'm sure they'll say WE'RE fine",
    "   ",
]


def quants(path):
    rng = np.random.default_rng(0)
    writer = GGUFWriter(path, arch="llama")
    for key, add, value in [
        ("test.u8", writer.add_uint8, 200), ("test.i8", writer.add_int8, -100),
        ("test.u16", writer.add_uint16, 60000), ("test.i16", writer.add_int16, -30000),
        ("test.u32", writer.add_uint32, 4000000000), ("test.i32", writer.add_int32, -2000000000),
        ("test.u64", writer.add_uint64, 2**63 + 5), ("test.i64", writer.add_int64, -(2**62)),
        ("test.f32", writer.add_float32, 0.1), ("test.f64", writer.add_float64, 0.1),
        ("test.bool", writer.add_bool, True), ("test.string", writer.add_string, "héllo"),
        ("test.ints", writer.add_array, [1, -2, 3]), ("test.strings", writer.add_array, ["a", "", "ü"]),
        ("test.nested", writer.add_array, [[1, 2], [3]]),
    ]:
        add(key, value)

    def add(name, raw, qtype, expected):
        writer.add_tensor(name, raw, raw_dtype=qtype)
        writer.add_tensor(name + ".expected", expected.astype(np.float32))

    values = rng.standard_normal((2, 256)).astype(np.float32)
    add("f32", values, T.F32, values)
    add("f16", values.astype(np.float16), T.F16, values.astype(np.float16).astype(np.float32))
    bf16 = quantize(values, T.BF16)
    add("bf16", bf16, T.BF16, dequantize(bf16, T.BF16))
    for qtype, offsets in SCALES.items():
        block, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(2, 256 // block, size), dtype=np.uint8)
        for at in offsets:
            scales = (rng.standard_normal(raw.shape[:2]) * 0.05).astype(np.float16)
            raw[:, :, at:at + 2] = scales.view(np.uint8).reshape(2, -1, 2)
        raw = raw.reshape(2, -1)
        add(qtype.name.lower(), raw, qtype, dequantize(raw, qtype))
    # Scale 2^-4 and values -127..127: every product is exact in f16.
    exact = np.zeros((2, 8, 34), dtype=np.uint8)
    exact[:, :, 0:2] = np.array([2.0**-4], dtype=np.float16).view(np.uint8)
    exact[:, :, 2:] = rng.integers(-127, 128, size=(2, 8, 32), dtype=np.int8).view(np.uint8)
    exact = exact.reshape(2, -1)
    add("q8_0_exact", exact, T.Q8_0, dequantize(exact, T.Q8_0))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def crc32(values):
    return zlib.crc32(np.ascontiguousarray(values, dtype="<f4").tobytes())


LAYER = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def hf_tensors(path):
    """HF name -> float32 array, as transformers' GGUF loader reads the file."""
    reader = GGUFReader(path)
    field = lambda key: reader.fields[key].contents() if key in reader.fields else None
    arch = field("general.architecture")
    heads, kv_heads = field(f"{arch}.attention.head_count"), field(f"{arch}.attention.head_count_kv")
    out = {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        else:
            _, layer, rest = t.name.split(".", 2)
            module, suffix = rest.rsplit(".", 1)
            hf = LAYER.get(module)
            if module == "ffn_norm":
                hf = "pre_feedforward_layernorm" if arch in ("gemma2", "gemma3") else "post_attention_layernorm"
            name = f"model.layers.{layer}.{hf}.{suffix}"
            if arch == "llama" and module in ("attn_q", "attn_k"):
                n = heads if module == "attn_q" else kv_heads
                # transformers' _reverse_permute_weights (the inverse of convert_hf_to_gguf's permute)
                w = w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        if arch.startswith("gemma") and t.name.endswith("norm.weight"):
            w = w - np.float32(1)
        out[name] = w
    return out


def reference(assets, llama_tokenize):
    models = {
        "smollm2": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3": "gemma3/gemma-3-270m-q4_k_m.gguf",
        "qwen2.5": "qwen2.5/qwen2.5-coder-0.5b-q4_k_m.gguf",
    }
    result = {"texts": TEXTS, "models": {}}
    for key, rel in models.items():
        path = os.path.join(assets, rel)
        entry = {"file": rel, "tensors": {}}
        for name, w in sorted(hf_tensors(path).items()):
            entry["tensors"][name] = {"shape": list(w.shape), "crc32": crc32(w)}
        if llama_tokenize:
            entry["llama_cpp_ids"] = [tokenize(llama_tokenize, path, text) for text in TEXTS]
        result["models"][key] = entry
        print(key, len(entry["tensors"]), "tensors", file=sys.stderr)
    return result


def tokenize(binary, model, text):
    out = subprocess.run(
        [binary, "-m", model, "--stdin", "--no-escape", "--ids", "--no-bos", "--log-disable"],
        input=text, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def compact_json(value, depth=0):
    """JSON with one line per innermost object or list, so diffs show which tensor changed."""
    flat = json.dumps(value, ensure_ascii=False)
    nested = isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values())
    nested = nested or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))
    if not nested or len(flat) < 100:
        return flat
    pad = "  " * (depth + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    items = [pad + compact_json(v, depth + 1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"


def main():
    os.makedirs(OUT, exist_ok=True)
    quants(os.path.join(OUT, "quants.gguf"))
    if len(sys.argv) > 1:
        data = reference(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
        with open(os.path.join(OUT, "reference.json"), "w") as f:
            f.write(compact_json(data) + "\n")


if __name__ == "__main__":
    main()
