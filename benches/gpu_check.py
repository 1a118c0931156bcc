#!/usr/bin/env python3
"""Helpers of benches/gpu-check (Python 3 standard library, plus NumPy for `synth`).

  executables CARGO_JSON NAME...   the test executables cargo built, one `NAME PATH` per line
  synth CONFIG_DIR OUT_DIR DTYPE   a checkpoint of CONFIG_DIR's shapes with random weights
  table RESULTS_DIR                the results of one check as a Markdown table
"""

import glob
import json
import os
import struct
import sys


def executables(cargo_json, names):
    """`cargo test --no-run --message-format=json` names each test binary it built."""
    found = {}
    with open(cargo_json) as f:
        for line in f:
            message = json.loads(line)
            target = message.get("target", {})
            if message.get("reason") == "compiler-artifact" and message.get("executable") and "test" in target.get("kind", []):
                found[target["name"]] = message["executable"]
    missing = [n for n in names if n not in found]
    if missing:
        sys.exit(f"gpu-check: cargo built no test binary named {', '.join(missing)}")
    for name in names:
        print(name, found[name])


# -- synth -------------------------------------------------------------------------------------
# Throughput does not depend on the weights' values, only on shapes and storage types, so a
# checkpoint of a real model's config.json with random weights measures the same passes without
# carrying its weights to the device. The tensor names are those of the Llama layout
# (SmolLM2, Qwen2.5); Qwen2's attention has biases on q, k and v.


def synth_tensors(config):
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim", hidden // heads)
    ff = config["intermediate_size"]
    vocab = config["vocab_size"]
    biases = config.get("model_type") == "qwen2" or config.get("attention_bias", False)
    tensors = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config.get("tie_word_embeddings", False):
        tensors["lm_head.weight"] = (vocab, hidden)
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        tensors[f"{p}.input_layernorm.weight"] = (hidden,)
        tensors[f"{p}.post_attention_layernorm.weight"] = (hidden,)
        tensors[f"{p}.self_attn.q_proj.weight"] = (heads * head_dim, hidden)
        tensors[f"{p}.self_attn.k_proj.weight"] = (kv_heads * head_dim, hidden)
        tensors[f"{p}.self_attn.v_proj.weight"] = (kv_heads * head_dim, hidden)
        tensors[f"{p}.self_attn.o_proj.weight"] = (hidden, heads * head_dim)
        if biases:
            tensors[f"{p}.self_attn.q_proj.bias"] = (heads * head_dim,)
            tensors[f"{p}.self_attn.k_proj.bias"] = (kv_heads * head_dim,)
            tensors[f"{p}.self_attn.v_proj.bias"] = (kv_heads * head_dim,)
        tensors[f"{p}.mlp.gate_proj.weight"] = (ff, hidden)
        tensors[f"{p}.mlp.up_proj.weight"] = (ff, hidden)
        tensors[f"{p}.mlp.down_proj.weight"] = (hidden, ff)
    return tensors


def synth(config_dir, out_dir, dtype):
    import numpy as np

    with open(os.path.join(config_dir, "config.json")) as f:
        config = json.load(f)
    np_dtype, st_dtype = {"f32": (np.float32, "F32"), "f16": (np.float16, "F16")}[dtype]
    config["torch_dtype"] = {"f32": "float32", "f16": "float16"}[dtype]
    rng = np.random.default_rng(0)
    header, blobs, offset = {}, [], 0
    for name, shape in synth_tensors(config).items():
        # Norm weights near 1 and small matrices keep activations finite through every layer.
        if name.endswith("norm.weight"):
            values = np.ones(shape, dtype=np_dtype)
        else:
            values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np_dtype)
        blob = values.tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    os.makedirs(out_dir, exist_ok=True)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        source = os.path.join(config_dir, name)
        if os.path.exists(source):
            with open(source, "rb") as f, open(os.path.join(out_dir, name), "wb") as g:
                g.write(f.read())


# -- table -------------------------------------------------------------------------------------


def table(results):
    """bench-*.json (perplex bench), ppl-*.json (perplex ppl), tests.txt and llama-*.txt."""
    lines = []
    if os.path.exists(os.path.join(results, "adapter.txt")):
        lines += ["adapter: " + open(os.path.join(results, "adapter.txt")).read().strip(), ""]
    if os.path.exists(os.path.join(results, "tests.txt")):
        lines += ["| test binary | result |", "|---|---|"]
        for line in open(os.path.join(results, "tests.txt")):
            name, _, result = line.strip().partition(" ")
            lines.append(f"| {name} | {result} |")
        lines.append("")
    benches = sorted(glob.glob(os.path.join(results, "bench-*.json")))
    if benches:
        lines += [
            "| model | weights | ctx | batch | tokens/s | achieved GFLOP/s | of matmul peak | memory (planned) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for path in benches:
            b = json.load(open(path))
            label = os.path.basename(path)[len("bench-") : -len(".json")].rsplit("-ctx", 1)[0]
            memory = (b["weight_bytes"] + b["activation_bytes"]) / 2**20
            lines.append(
                f"| {label} | {b['weight_dtype']} | {b['ctx']} | {b['batch']} | {b['tokens_per_second']:.1f} | "
                f"{b['achieved_gflops']:.1f} | {100 * b['fraction_of_peak']:.0f}% | {memory:.0f} MiB |"
            )
        lines.append("")
    ppls = sorted(glob.glob(os.path.join(results, "ppl-*.json")))
    if ppls:
        lines += ["| file | positions | token perplexity | positions/s |", "|---|---|---|---|"]
        for path in ppls:
            p = json.load(open(path))
            lines.append(
                f"| {os.path.basename(p['model'])} | {p['positions']} | {p['total']['token_perplexity']:.4f} | "
                f"{p['positions_per_second']:.1f} |"
            )
        lines.append("")
    for path in sorted(glob.glob(os.path.join(results, "llama-*.txt"))):
        lines += [f"{os.path.basename(path)}:", "```", open(path).read().strip(), "```", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "executables":
        executables(args[0], args[1:])
    elif command == "synth":
        synth(*args)
    elif command == "table":
        table(args[0])
    else:
        sys.exit(__doc__)
