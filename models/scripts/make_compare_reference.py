"""Reference for `perplex compare` (tests/compare.rs): KL(base || model), same top token and
delta-p per position, computed in float64 from both models' full logits.

Each model's logits come from the float64 NumPy forward pass (numpy_forward.py, weights read with
NumPy), log-softmax and the KL divergence in float64 over the whole vocabulary. The documents are
short enough (under --ctx 128 tokens) that perplex's rolling window of each is one window: the
prefix token (BOS) followed by the document's tokens, predicting those tokens. Tokenized with the
`tokenizers` package (tokenizer.json), add_special_tokens=False, as perplex encodes.

    python models/scripts/make_compare_reference.py   # writes models/reference/compare-family.json,
                                                      # and compare-smollm2.json with $PERPLEX_ASSETS set

Needs numpy and tokenizers (no torch).
"""
import json
import os
import sys

import numpy as np
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from numpy_forward import load_weights_f64_numpy, log_softmax, numpy_logits_from_torch  # noqa: E402

DATA = "tests/compare-data/docs.jsonl"
# (base, model): different widths, and two steps of one size.
FAMILY = [
    ("models/family/0.9M/step500", "models/family/0.2M/step250"),
    ("models/family/0.9M/step500", "models/family/0.9M/step250"),
]
# SmolLM2-135M in f32 against its f16 export, from the asset cache ($PERPLEX_ASSETS).
SMOLLM2 = [("smollm2/hf-f32", "smollm2/hf-f16")]
CTX = 128


def logprobs(root, model_dir, ids):
    logits = numpy_logits_from_torch(os.path.join(root, model_dir), ids, load=load_weights_f64_numpy)
    return log_softmax(logits)


def write(root, pairs, name):
    docs = [json.loads(line)["text"] for line in open(os.path.join(ROOT, DATA))]
    tokenizer = Tokenizer.from_file(os.path.join(root, pairs[0][0], "tokenizer.json"))
    config = json.load(open(os.path.join(root, pairs[0][0], "tokenizer_config.json")))
    bos = tokenizer.token_to_id(config["bos_token"])
    encoded = [tokenizer.encode(d, add_special_tokens=False).ids for d in docs]
    assert all(0 < len(ids) < CTX for ids in encoded), [len(ids) for ids in encoded]
    out = {"data": DATA, "ctx": CTX, "pairs": []}
    for base, model in pairs:
        kld, logprob_base, logprob_model, same_top = [], [], [], []
        for ids in encoded:
            inputs = [bos] + ids[:-1]
            lb, lm = logprobs(root, base, inputs), logprobs(root, model, inputs)
            kld += list((np.exp(lb) * (lb - lm)).sum(-1))
            logprob_base += [lb[pos, target] for pos, target in enumerate(ids)]
            logprob_model += [lm[pos, target] for pos, target in enumerate(ids)]
            same_top += [int(a == b) for a, b in zip(lb.argmax(-1), lm.argmax(-1))]
        dp = np.exp(logprob_model) - np.exp(logprob_base)
        pair = {
            "base": base,
            "model": model,
            "tokens": len(kld),
            "mean_kld": float(np.mean(kld)),
            "same_top": float(np.mean(same_top)),
            "mean_delta_p": float(np.mean(dp)),
            "rms_delta_p": float(np.sqrt(np.mean(np.square(dp)))),
            # Per position, documents in order: the values the means are made of.
            "kld": [float(x) for x in kld],
            "logprob_base": [float(x) for x in logprob_base],
            "logprob_model": [float(x) for x in logprob_model],
            "same_top_each": same_top,
        }
        out["pairs"].append(pair)
        print(f"{base} vs {model}: {pair['tokens']} tokens, mean KLD {pair['mean_kld']:.6f}, same top {pair['same_top']:.4f}")
    path = os.path.join(ROOT, "models/reference", name)
    with open(path, "w") as f:
        json.dump(out, f)
        f.write("\n")


def main():
    write(ROOT, FAMILY, "compare-family.json")
    assets = os.environ.get("PERPLEX_ASSETS")
    if assets:
        write(assets, SMOLLM2, "compare-smollm2.json")
    else:
        print("PERPLEX_ASSETS is not set: compare-smollm2.json not written")


if __name__ == "__main__":
    main()
