#!/usr/bin/env python3
"""Compares a `perplex eval` run with lm-evaluation-harness's on the same documents.

    python models/scripts/compare_eval.py REFERENCE_JSON PERPLEX_SAMPLES_JSONL PERPLEX_RESULTS_JSON

REFERENCE_JSON is written by make_eval_reference.py (for example with DOCS 500 and
--tasks=winogrande); the other two by `perplex eval ... --limit DOCS --samples S --json R`.
For each zero-shot task of the reference it prints the number of requests, the largest
|ll - lm-eval's ll| (tolerance 1e-3), the requests whose token count or greedy flag differ, the
documents whose highest-ll choice differs, and both runs' acc and acc_norm. Exits 1 if any check
fails.
"""
import json
import sys
from collections import defaultdict

TOLERANCE = 1e-3


def main():
    reference_path, samples_path, results_path = sys.argv[1:4]
    reference = json.load(open(reference_path))
    ours = defaultdict(dict)
    for line in open(samples_path):
        s = json.loads(line)
        ours[s["task"]][(s["doc_id"], s["choice"])] = s
    results = json.load(open(results_path))["results"]
    ok = True
    for run in reference["runs"]:
        task = run["task"]
        if run["num_fewshot"] != 0 or task not in ours:
            continue
        worst, requests, token_diffs, greedy_diffs, pick_diffs = 0.0, 0, 0, 0, 0
        for doc in run["docs"]:
            theirs = [r["ll"] for r in doc["requests"]]
            mine = []
            for choice, want in enumerate(doc["requests"]):
                got = ours[task][(doc["doc_id"], choice)]
                if (got["context"], got["continuation"]) != (want["context"], want["continuation"]):
                    sys.exit(f"{task} doc {doc['doc_id']} choice {choice}: different request text")
                worst = max(worst, abs(got["ll"] - want["ll"]))
                token_diffs += got["tokens"] != want["tokens"]
                greedy_diffs += got["is_greedy"] != want["is_greedy"]
                mine.append(got["ll"])
                requests += 1
            pick_diffs += max(range(len(mine)), key=mine.__getitem__) != max(range(len(theirs)), key=theirs.__getitem__)
        acc = (results[task]["acc,none"], run["acc"])
        acc_norm = (results[task].get("acc_norm,none"), run.get("acc_norm"))
        print(
            f"{task}: {len(run['docs'])} documents, {requests} requests, max |delta ll| {worst:.2e}, "
            f"token counts differ {token_diffs}, greedy flags differ {greedy_diffs}, argmax differs {pick_diffs}; "
            f"acc {acc[0]:.4f} vs {acc[1]:.4f}, acc_norm {acc_norm[0]} vs {acc_norm[1]}"
        )
        # lm-eval reports acc_norm only for the tasks whose yaml asks for it (not winogrande).
        same_norm = acc_norm[1] is None or acc_norm[0] == acc_norm[1]
        ok &= worst <= TOLERANCE and token_diffs == 0 and acc[0] == acc[1] and same_norm
    if "seconds" in reference:
        print(f"lm-eval wall time {reference['seconds']:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
