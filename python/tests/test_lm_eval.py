"""`lm_eval --model perplex` on the task YAMLs in tests/lm_eval over local data: every
log-likelihood equals the perplex command line's on the same requests, bit for bit, and every
generated answer is the command line's."""

import json
import os
import sys
from pathlib import Path

import pytest

import perplex
from conftest import DEFAULT_MODEL, REPOSITORY, run

pytest.importorskip("lm_eval")
TASKS = REPOSITORY / "python" / "tests" / "lm_eval"
LIMIT = 20


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory):
    """lm_eval's results and samples for the three tasks, from its own command line."""
    out = tmp_path_factory.mktemp("lm_eval")
    lm_eval = Path(sys.executable).parent / "lm_eval"
    run(
        [lm_eval, "--model", "perplex", "--model_args", "pretrained=models/default",
         "--tasks", "perplex_verses", "perplex_passages", "perplex_answers", "--include_path", TASKS,
         "--limit", LIMIT, "--log_samples", "--output_path", out],
        env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
    )
    (results,) = out.rglob("results_*.json")
    samples = {task: [json.loads(line) for line in next(out.rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
               for task in ("perplex_verses", "perplex_passages", "perplex_answers")}
    return json.loads(results.read_text()), samples


def test_multiple_choice_equals_perplex_eval(lm_eval_run, perplex_cli, tmp_path):
    results, samples = lm_eval_run
    perplex_samples, perplex_results = tmp_path / "samples.jsonl", tmp_path / "results.json"
    run([perplex_cli, "eval", "--model", DEFAULT_MODEL, "--task", "mc", "--data", TASKS / "verses.jsonl",
         "--limit", LIMIT, "--samples", perplex_samples, "--json", perplex_results])
    expected = {(s["doc_id"], s["choice"]): s for s in map(json.loads, perplex_samples.read_text().splitlines())}

    compared = 0
    for doc in samples["perplex_verses"]:
        for choice, (arguments, responses) in enumerate(zip(doc["arguments"].values(), doc["resps"])):
            ll, is_greedy = responses[0]
            want = expected[(doc["doc_id"], choice)]
            assert (arguments["arg_0"], arguments["arg_1"]) == (want["context"], want["continuation"])
            # lm-eval writes floats with repr, which reads back to the same bits.
            assert float(ll) == want["ll"], (doc["doc_id"], choice)
            assert is_greedy == str(want["is_greedy"])
            compared += 1
    assert compared == len(expected) and len(samples["perplex_verses"]) == LIMIT

    theirs = results["results"]["perplex_verses"]
    ours = json.loads(perplex_results.read_text())["results"]["mc"]
    for metric in ("acc,none", "acc_norm,none"):
        assert theirs[metric] == ours[metric], metric


def test_rolling_equals_perplex_ppl(lm_eval_run, perplex_cli, tmp_path):
    _, samples = lm_eval_run
    report = tmp_path / "ppl.json"
    run([perplex_cli, "ppl", "--model", DEFAULT_MODEL, "--data", TASKS / "passages.jsonl", "--ctx", "512", "--json", report])
    documents = json.loads(report.read_text())["documents"]
    lls = [float(doc["resps"][0][0]) for doc in sorted(samples["perplex_passages"], key=lambda d: d["doc_id"])]
    assert lls == [-d["nll"] for d in documents]
    # Two passages are longer than a window, so rolling windows were really cut.
    assert max(d["tokens"] for d in documents) > 512


def test_generate_until_equals_perplex_generate(lm_eval_run, perplex_cli, tmp_path):
    _, samples = lm_eval_run
    answers = tmp_path / "answers.jsonl"
    run([perplex_cli, "generate", "--model", DEFAULT_MODEL, "--data", TASKS / "verses.jsonl", "--field", "context",
         "--max-tokens", "16", "--until", "\n", "--until", ";", "--json", answers])
    expected = [json.loads(line) for line in answers.read_text().splitlines()]
    docs = sorted(samples["perplex_answers"], key=lambda d: d["doc_id"])
    assert len(docs) == LIMIT
    for doc in docs:
        want = expected[doc["doc_id"]]
        assert doc["arguments"]["gen_args_0"]["arg_0"] == want["context"]
        assert doc["resps"][0][0] == want["answer"]["text"], doc["doc_id"]
    # Greedy answers that stop at a stop string or run to 16 tokens, not empty ones.
    assert any(doc["resps"][0][0].strip() for doc in docs)


def test_simple_evaluate_takes_an_instance(monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from perplex.lm_eval import PerplexLM

    lm = PerplexLM(DEFAULT_MODEL, batch_size="auto:4", device="cuda:0")
    assert lm.max_length == 512
    monkeypatch.chdir(REPOSITORY)  # the task YAML's data paths are relative to it
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["perplex_verses"], limit=4, task_manager=TaskManager(include_path=str(TASKS))
    )
    assert results["results"]["perplex_verses"]["acc,none"] in {0.0, 0.25, 0.5, 0.75, 1.0}


def test_model_arguments():
    from perplex.lm_eval import PerplexLM

    lm = PerplexLM.create_from_arg_string(f"pretrained={DEFAULT_MODEL},ctx=128,batch_size=2", {"batch_size": 1, "device": "cuda:0"})
    assert lm.max_length == 128 and (lm.rank, lm.world_size) == (0, 1)
    with pytest.raises(ValueError, match="dtype"):
        PerplexLM(DEFAULT_MODEL, dtype="float32")
    with pytest.raises(ValueError, match="disagree"):
        PerplexLM(DEFAULT_MODEL, ctx=128, max_length=256)
    with pytest.raises(ValueError, match="rank"):
        PerplexLM(DEFAULT_MODEL, rank=2, world_size=2)
    assert lm.generate_until([]) == []
