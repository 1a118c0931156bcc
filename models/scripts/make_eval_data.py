#!/usr/bin/env python3
"""The Parquet and `datasets.save_to_disk` copies of the eval test data in tests/eval-data/.

    python models/scripts/make_eval_data.py [DIR]      (default: tests/eval-data)

tests/eval.rs reads the same documents from mc.jsonl, mc.parquet and mc-dataset/ (a Dataset
directory: state.json, dataset_info.json, data-00000-of-00001.arrow) and expects identical records.
arc-dict/ is a DatasetDict in the ARC format (train / validation / test splits, three documents
each) for the split-selection tests: arc_easy evaluates `test` and draws few-shot examples from
`train`, as lm-evaluation-harness does.
"""
import json
import os
import sys

import datasets

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "eval-data")

rows = [json.loads(line) for line in open(os.path.join(out, "mc.jsonl"), encoding="utf-8")]
# Columns must have one type: the optional delimiter is null where a line has none.
for row in rows:
    row.setdefault("target_delimiter", None)
mc = datasets.Dataset.from_list(rows)
mc.to_parquet(os.path.join(out, "mc.parquet"))
mc.save_to_disk(os.path.join(out, "mc-dataset"))


def arc(split, n):
    return [
        {
            "id": f"{split}-{i}",
            "question": f"Which {split} question is number {i}?",
            "choices": {"text": [f"{split} answer {i}", "none", "all"], "label": ["A", "B", "C"]},
            "answerKey": "A",
        }
        for i in range(n)
    ]


datasets.DatasetDict({split: datasets.Dataset.from_list(arc(split, 3)) for split in ["train", "validation", "test"]}).save_to_disk(
    os.path.join(out, "arc-dict")
)
print("wrote", out)
