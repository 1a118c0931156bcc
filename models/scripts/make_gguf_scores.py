"""Reference scores of the asset cache's GGUF models on models/gguf-fixtures/score.txt.

    python models/scripts/make_gguf_scores.py ASSETS_DIR LLAMA_TOKENIZE LLAMA_PERPLEXITY

Writes models/gguf-fixtures/scores.json with, per model:
- `transformers`: the text as one rolling window (lm-evaluation-harness's loglikelihood_rolling:
  the prefix token, then every token predicted), scored by transformers in float32 from the same
  GGUF file (transformers dequantizes it with gguf-py) as reference_scoring.py scores every fixture;
  token ids from llama.cpp's tokenizer.
- `llama_perplexity`: llama.cpp's `llama-perplexity -c 128` on the same file and text (chunks of 128
  tokens, the second half of each scored), its final estimate and per-chunk running values.
LLAMA_TOKENIZE and LLAMA_PERPLEXITY are binaries of a llama.cpp CPU build (not part of perplex).
"""

import json
import math
import os
import re
import subprocess
import sys

from reference_scoring import score_after_prefix  # first: sets threads / offline mode / logging

import torch  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from make_gguf_fixtures import tokenize  # noqa: E402  (llama.cpp's token ids, as the tokenizer tests use)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "gguf-fixtures")
MODELS = {
    "smollm2": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma3/gemma-3-270m-q4_k_m.gguf",
    "qwen2.5": "qwen2.5/qwen2.5-coder-0.5b-q4_k_m.gguf",
}
CHUNK_CTX = 128


def bos_id(path):
    field = GGUFReader(path).fields["tokenizer.ggml.bos_token_id"]
    return int(field.parts[field.data[0]][0])


def transformers_rolling(path, ids, prefix):
    folder, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager").eval()
    return {"tokens": len(ids), "nll": -math.fsum(score_after_prefix(model, prefix, ids)["logprobs"])}


def llama_perplexity(binary, path, text_path):
    out = subprocess.run(
        [binary, "-m", path, "-f", text_path, "-c", str(CHUNK_CTX), "-t", "2", "--no-warmup"],
        check=True, capture_output=True, text=True,
    )
    log = out.stdout + out.stderr
    final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    chunks = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+),?", log)]
    return {"ctx": CHUNK_CTX, "ppl": float(final.group(1)), "stderr": float(final.group(2)), "running": chunks}


def main():
    assets, llama_tokenize, llama_ppl = sys.argv[1:4]
    text_path = os.path.join(FIXTURES, "score.txt")
    text = open(text_path, encoding="utf-8").read()
    result = {"text": "score.txt", "models": {}}
    for key, file in MODELS.items():
        path = os.path.join(assets, file)
        ids = tokenize(llama_tokenize, path, text)
        entry = {"file": file, "prefix": bos_id(path)}
        entry["transformers"] = transformers_rolling(path, ids, entry["prefix"])
        entry["llama_perplexity"] = llama_perplexity(llama_ppl, path, text_path)
        print(key, json.dumps(entry), file=sys.stderr)
        result["models"][key] = entry
    with open(os.path.join(FIXTURES, "scores.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
