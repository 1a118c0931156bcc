"""KL divergence between two GGUF files over llama-perplexity's chunks, in float64: the exact
arithmetic `perplex compare --window chunks` and `llama-perplexity --kl-divergence` both estimate.

transformers dequantizes both files (its GGUF loader: F16, Q8_0, K-quants and more) into the same
model; both run in float64 on the CPU. The text is tokenized as llama-perplexity does it (the GGUF's
tokenizer, BOS first where the GGUF adds one, no other special tokens) and cut into chunks of --ctx
tokens whose first token becomes BOS (where it adds one); positions ctx/2 .. ctx-2 of each chunk
are scored (predicting the next token).
Prints the statistics as JSON.

    python models/scripts/gguf_kld_reference.py BASE.gguf MODEL.gguf TEXT [--ctx 512]

Needs torch, transformers, accelerate (transformers' GGUF loader asks for it) and gguf (the PyPI
package); not used by the tests.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path):
    directory, name = os.path.split(os.path.abspath(path))
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32)
    return model.double().eval()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("model")
    parser.add_argument("text")
    parser.add_argument("--ctx", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    directory, name = os.path.split(os.path.abspath(args.base))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    text = open(args.text, encoding="utf-8").read()
    # llama-perplexity tokenizes the whole text, BOS first where the GGUF says to add one
    # (tokenizer.ggml.add_bos_token; absent: SentencePiece vocabularies do, BPE ones do not), and
    # then replaces each chunk's first token with BOS.
    reader = GGUFReader(args.base)
    field = reader.fields.get("tokenizer.ggml.add_bos_token")
    add_bos = field.contents() if field is not None else reader.fields["tokenizer.ggml.model"].contents() == "llama"
    bos = [tokenizer.bos_token_id] if add_bos else []
    tokens = bos + tokenizer(text, add_special_tokens=False)["input_ids"]
    ctx, first = args.ctx, args.ctx // 2
    chunks = len(tokens) // ctx
    base, model = load(args.base), load(args.model)

    kld, lp_base, lp_model, same_top = [], [], [], []
    with torch.no_grad():
        for c in range(chunks):
            window = list(tokens[c * ctx:(c + 1) * ctx])
            window[:1] = bos or window[:1]
            ids = torch.tensor([window])
            lb = torch.log_softmax(base(ids).logits[0].double(), -1)[first:ctx - 1]
            lm = torch.log_softmax(model(ids).logits[0].double(), -1)[first:ctx - 1]
            targets = torch.tensor(window[first + 1:ctx])
            kld += (lb.exp() * (lb - lm)).sum(-1).tolist()
            lp_base += lb.gather(1, targets[:, None])[:, 0].tolist()
            lp_model += lm.gather(1, targets[:, None])[:, 0].tolist()
            same_top += (lb.argmax(-1) == lm.argmax(-1)).tolist()

    kld, lp_base, lp_model = np.array(kld), np.array(lp_base), np.array(lp_model)
    dp = np.exp(lp_model) - np.exp(lp_base)
    n = len(kld)
    result = {
        "base": args.base,
        "model": args.model,
        "ctx": ctx,
        "chunks": chunks,
        "positions": n,
        "ppl_base": math.exp(-lp_base.mean()),
        "ppl_model": math.exp(-lp_model.mean()),
        "kld_mean": kld.mean(),
        "kld_mean_stderr": kld.std(ddof=1) / math.sqrt(n),
        "same_top": float(np.mean(same_top)),
        "delta_p_mean": dp.mean(),
        "delta_p_rms": math.sqrt((dp ** 2).mean()),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
