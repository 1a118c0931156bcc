#!/usr/bin/env python3
"""lm-evaluation-harness's HFLM generate_until on SmolLM2-135M (float32, CPU, batch size 1, no
BOS) for the generative tasks on tests/eval-data/gen, against `perplex eval --samples` on the
same model and data:

    /tmp/venv-hf/bin/python models/scripts/compare_gen.py ASSET_CACHE OUT_JSON [MAX_GEN_TOKS]
    /tmp/venv-hf/bin/python models/scripts/compare_gen.py --compare OUT_JSON PERPLEX_SAMPLES...

The first form writes, per task, every document's prompt, generated text, filtered answers and
exact_match as lm-eval has them; the second compares perplex's samples with them (prompt and
generated text identical, filtered answers and exact_match identical) and prints the differences.
Runs: gsm8k 5-shot (few-shot pool: tests/eval-data/gen/gsm8k/train.jsonl), gsm8k_cot 8-shot,
triviaqa 0-shot; MAX_GEN_TOKS (default 128) for all.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "tests", "eval-data", "gen")
RUNS = [("gsm8k", 5), ("gsm8k_cot", 8), ("triviaqa", 0)]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def reference(cache, out, max_gen_toks):
    import datasets
    import torch
    from lm_eval import evaluator
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(2)
    splits = {
        "openai/gsm8k": {"test": read_jsonl(os.path.join(DATA, "gsm8k", "test.jsonl")),
                         "train": read_jsonl(os.path.join(DATA, "gsm8k", "train.jsonl"))},
        "mandarjoshi/trivia_qa": {"validation": read_jsonl(os.path.join(DATA, "triviaqa", "validation.jsonl")),
                                  "train": read_jsonl(os.path.join(DATA, "triviaqa", "train.jsonl"))},
    }

    def download(self, dataset_kwargs=None, **kwargs):
        self.dataset = datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in splits[self.DATASET_PATH].items()})

    ConfigurableTask.download = download
    lm = HFLM(pretrained=os.path.join(cache, "smollm2", "hf-f32"), dtype="float32", batch_size=1, add_bos_token=False, device="cpu")
    runs = []
    for task, shots in RUNS:
        out_ = evaluator.simple_evaluate(
            model=lm, tasks=[task], num_fewshot=shots, log_samples=True, task_manager=TaskManager(),
            gen_kwargs=f"max_gen_toks={max_gen_toks}",
            random_seed=0, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234, bootstrap_iters=0,
        )
        docs = {}
        for s in out_["samples"][task]:
            d = docs.setdefault(s["doc_id"], {"doc_id": s["doc_id"], "filters": {}})
            d["prompt"] = s["arguments"][0][0]
            d["generation"] = s["resps"][0][0]
            d["filters"][s["filter"]] = {"answer": s["filtered_resps"][0], "exact_match": s["exact_match"]}
        runs.append({"task": task, "num_fewshot": shots, "max_gen_toks": max_gen_toks,
                     "results": {k: v for k, v in out_["results"][task].items() if k != "alias"},
                     "docs": [docs[i] for i in sorted(docs)]})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model": "SmolLM2-135M hf-f32", "runs": runs}, f, ensure_ascii=False, indent=1)
        f.write("\n")


def compare(ref_path, sample_paths):
    ref = json.load(open(ref_path, encoding="utf-8"))
    mine = {}
    for path in sample_paths:
        for s in read_jsonl(path):
            if "generation" in s:
                mine[(s["task"], s["doc_id"])] = s
    bad = 0
    for run in ref["runs"]:
        for d in run["docs"]:
            s = mine.get((run["task"], d["doc_id"]))
            if s is None:
                print(f"{run['task']} {d['doc_id']}: not in perplex's samples")
                bad += 1
                continue
            problems = []
            if s["prompt"] != d["prompt"]:
                problems.append("prompt differs")
            if s["generation"] != d["generation"]:
                problems.append(f"generation differs:\n  lm-eval {d['generation']!r}\n  perplex {s['generation']!r}")
            for f in s["filters"]:
                want = d["filters"][f["filter"]]
                if f["answer"] != want["answer"] or f["exact_match"] != want["exact_match"]:
                    problems.append(f"{f['filter']}: lm-eval {want}, perplex {f['answer']!r} {f['exact_match']}")
            status = "ok" if not problems else "DIFFERS"
            print(f"{run['task']} doc {d['doc_id']}: {status}")
            for p in problems:
                print("   " + p)
            bad += bool(problems)
    print(f"{bad} documents differ")
    return bad


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(1 if compare(sys.argv[2], sys.argv[3:]) else 0)
    reference(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 128)
