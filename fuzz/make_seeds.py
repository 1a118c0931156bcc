#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the committed fixtures and the real assets.

    python fuzz/make_seeds.py [ASSETS_DIR]   (default ~/.cache/perplex-assets)

Real files are large, so seeds are shrunk copies that keep their structure: GGUF files keep every
metadata key (vocabulary arrays cut to 512 tokens) and every global and layer-0 tensor, each cut
to one row of real blocks; safetensors files keep every tensor name and dtype, each cut to two
values of real data; tokenizer.json files keep their pipeline with the vocabulary cut to 400
tokens. Needs gguf-py and numpy (the assets' .venv has both). Deterministic.
"""
import glob
import gzip
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ASSETS = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/perplex-assets")
CORPUS = os.path.join(HERE, "corpus")


def out(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def read(path, limit=None):
    with open(path, "rb") as f:
        return f.read() if limit is None else f.read(limit)


# ---- GGUF -------------------------------------------------------------------------------------

def shrink_gguf(path, name, keep_tokens=512):
    import numpy as np
    from gguf import GGUFReader, GGUFWriter, GGUFValueType
    from gguf.constants import GGML_QUANT_SIZES

    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    tmp = os.path.join(HERE, f".{name}.tmp")
    writer = GGUFWriter(tmp, arch=arch)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()[:keep_tokens]
    kept = set(tokens)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        value = field.contents()
        if key.endswith(".block_count"):
            value = 1
        if vtype == GGUFValueType.ARRAY:
            sub = field.types[1] if len(field.types) > 1 else None
            if key == "tokenizer.ggml.merges":
                value = [m for m in value if all(p in kept for p in m.split(" ", 1)) and m.replace(" ", "") in kept][:400]
            elif key.startswith("tokenizer.ggml."):
                value = value[:keep_tokens]
            else:
                value = value[:64]
            writer.add_key_value(key, value, vtype, sub_type=sub)
        else:
            if key.endswith("_token_id") and isinstance(value, int) and value >= keep_tokens:
                value = 1
            writer.add_key_value(key, value, vtype)
    for t in reader.tensors:
        if t.name.startswith("blk.") and not t.name.startswith("blk.0."):
            continue
        block, size = GGML_QUANT_SIZES[t.tensor_type]
        per_row = max(block, 32 // block * block)
        nbytes = per_row // block * size
        raw = t.data.tobytes()[:nbytes]
        if t.tensor_type.name in ("F32", "F16"):
            typed = np.frombuffer(raw, dtype=np.float32 if t.tensor_type.name == "F32" else np.float16).reshape(1, -1).copy()
            writer.add_tensor(t.name, typed)
        else:
            writer.add_tensor(t.name, np.frombuffer(raw, dtype=np.uint8).reshape(1, -1).copy(), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = read(tmp)
    os.remove(tmp)
    out("gguf", name, data)


def gguf_seeds():
    out("gguf", "quants.gguf", read(os.path.join(ROOT, "models/gguf-fixtures/quants.gguf")))
    for path, name in [
        ("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-q4_1"),
        ("gemma3/gemma-3-270m-q4_k_m.gguf", "gemma3-q4_k_m"),
        ("qwen2.5/qwen2.5-coder-0.5b-q4_k_m.gguf", "qwen2.5-q4_k_m"),
    ]:
        full = os.path.join(ASSETS, path)
        if os.path.exists(full):
            shrink_gguf(full, name + ".gguf")
            out("gguf", name + ".prefix", read(full, 4096))


# ---- safetensors ------------------------------------------------------------------------------

def shrink_safetensors(path, values=2):
    data = read(path)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    width = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "BOOL": 1}
    new_header, new_body = {}, b""
    if "__metadata__" in header:
        new_header["__metadata__"] = header.pop("__metadata__")
    for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
        info = header[name]
        w = width[info["dtype"]]
        start = info["data_offsets"][0]
        chunk = body[start : start + w * values]
        new_header[name] = {"dtype": info["dtype"], "shape": [values], "data_offsets": [len(new_body), len(new_body) + len(chunk)]}
        new_body += chunk
    text = json.dumps(new_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + new_body


def safetensors_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "models/tiny/*/model.safetensors"))) + [
        os.path.join(ROOT, "models/default/model.safetensors")
    ]:
        name = os.path.basename(os.path.dirname(path))
        out("safetensors", name + ".safetensors", shrink_safetensors(path))
    real = os.path.join(ASSETS, "smollm2/hf-f16/model.safetensors")
    if os.path.exists(real):
        out("safetensors", "smollm2-f16.shrunk", shrink_safetensors(real, values=1))
        out("safetensors", "smollm2-f16.prefix", read(real, 2048))


# ---- config.json and model.safetensors.index.json -----------------------------------------------

def model_json_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "models/tiny/*/config.json"))) + sorted(
        glob.glob(os.path.join(ROOT, "models/family/*/config.json"))
    ) + [os.path.join(ROOT, "models/default/config.json")]:
        out("model_json", os.path.basename(os.path.dirname(path)) + ".config.json", read(path))
    for path in sorted(glob.glob(os.path.join(ASSETS, "*/hf-*/config.json"))):
        parts = path.split(os.sep)
        out("model_json", f"{parts[-3]}-{parts[-2]}.config.json", read(path))
    index = {
        "metadata": {"total_size": 16},
        "weight_map": {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"},
    }
    out("model_json", "sharded.index.json", json.dumps(index, indent=2).encode())
    one = {"metadata": {"total_size": 8}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}
    out("model_json", "one-shard.index.json", json.dumps(one).encode())
    llama3 = json.loads(read(os.path.join(ROOT, "models/tiny/llama3-bf16/config.json")))
    llama3["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}
    out("model_json", "llama3-scaled.config.json", json.dumps(llama3).encode())


# ---- tokenizer.json ---------------------------------------------------------------------------

def shrink_tokenizer(path, keep=400):
    tok = json.loads(read(path))
    model = tok.get("model", {})
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        items = sorted(vocab.items(), key=lambda kv: kv[1])[:keep]
        model["vocab"] = dict(items)
        kept = set(model["vocab"])
        merges = model.get("merges", [])
        def parts(m):
            return m.split(" ", 1) if isinstance(m, str) else m
        model["merges"] = [m for m in merges if all(p in kept for p in parts(m)) and "".join(parts(m)) in kept][:keep]
    elif isinstance(vocab, list):
        model["vocab"] = vocab[:keep]
    tok["added_tokens"] = [t for t in tok.get("added_tokens", []) if t.get("id", 0) < keep][:16]
    return json.dumps(tok, ensure_ascii=False, separators=(",", ":")).encode()


def tokenizer_seeds():
    seen = set()
    for path in sorted(glob.glob(os.path.join(ROOT, "models/*/*/tokenizer.json"))) + sorted(
        glob.glob(os.path.join(ROOT, "models/*/tokenizer.json"))
    ):
        data = read(path)
        if data in seen:
            continue
        seen.add(data)
        name = path.replace(ROOT + os.sep, "").replace(os.sep, "-")
        out("tokenizer", name if len(data) < 20000 else name + ".shrunk", data if len(data) < 20000 else shrink_tokenizer(path))
    for path in sorted(glob.glob(os.path.join(ASSETS, "*/hf-f16/tokenizer.json"))) + sorted(
        glob.glob(os.path.join(ASSETS, "olmo-eval/tokenizers/*.json"))
    ):
        out("tokenizer", path.replace(ASSETS + os.sep, "").replace(os.sep, "-") + ".shrunk", shrink_tokenizer(path))


# ---- task and text data -----------------------------------------------------------------------

def data_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/eval-data/*.jsonl"))):
        data = read(path)
        out("data_json", os.path.basename(path), data)
        out("data_json", os.path.basename(path) + ".gz", gzip.compress(data, mtime=0))
        records = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
        out("data_json", os.path.basename(path)[:-1], json.dumps(records).encode())
    out("data_json", "text.jsonl", b'{"text": "The first document."}\n\n{"text": "A second one, \\u00fcnicode \\ud83d\\ude00."}\n')
    out("data_json", "plain.txt", "Plain text to score.\nTwo lines, ünïcödé.\n".encode())
    for task in ["arc_easy", "hellaswag", "winogrande", "piqa", "boolq", "copa", "sciq", "openbookqa"]:
        dumps = sorted(glob.glob(os.path.join(ASSETS, f"olmo-eval/oe_eval_tasks/{task}/*/requests.jsonl.gz")))
        if dumps:
            with gzip.open(dumps[0]) as f:
                lines = [f.readline() for _ in range(3)]
            out("data_json", f"{task}.requests.jsonl", b"".join(lines))
    for path in sorted(glob.glob(os.path.join(ASSETS, "olmo-eval/hf_datasets/**/*.arrow"), recursive=True)):
        if os.path.getsize(path) < 16000 and not os.path.basename(path).startswith("cache-") and (
            "mmlu" not in path or "abstract_algebra/dev" in path
        ):
            rel = path.replace(os.path.join(ASSETS, "olmo-eval/hf_datasets") + os.sep, "").replace(os.sep, "-")
            out("arrow", rel, read(path))
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/eval-data/**/*.arrow"), recursive=True)):
        out("arrow", path.replace(ROOT + os.sep, "").replace(os.sep, "-"), read(path))
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/eval-data/**/*.parquet"), recursive=True)):
        out("parquet", os.path.basename(path), read(path))
    for path in sorted(glob.glob(os.path.join(ASSETS, "olmo-eval/**/*.parquet"), recursive=True)):
        if os.path.getsize(path) < 16000:
            out("parquet", path.replace(ASSETS + os.sep, "").replace(os.sep, "-"), read(path))


if __name__ == "__main__":
    gguf_seeds()
    safetensors_seeds()
    model_json_seeds()
    tokenizer_seeds()
    data_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"{target}: {len(files)} files, {size} bytes")
