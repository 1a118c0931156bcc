"""perplex.Model and perplex.compare: the command line's rules and numbers from Python, errors as
exceptions, the GIL released during long calls, and Ctrl-C as KeyboardInterrupt."""

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import perplex
from conftest import DEFAULT_MODEL, HELDOUT, REPOSITORY, run

TEXT = HELDOUT[:1500]
CHOICES = [
    ("And God said, Let there be", " light"),
    ("And God said, Let there be", " waters"),
    ("And God said, Let there be", " a firmament in the midst of the waters"),
    ("", "In the beginning"),
    ("And the evening and the morning were the ", "first day."),
]


def test_loglikelihood_answers_every_request_in_order(model):
    results = model.loglikelihood(CHOICES)
    assert len(results) == len(CHOICES)
    for ll, is_greedy in results:
        assert isinstance(ll, float) and ll < 0
        assert isinstance(is_greedy, bool)
    # Any order and any batch size give the same numbers, bit for bit.
    reversed_results = model.loglikelihood(CHOICES[::-1])
    assert reversed_results[::-1] == results
    one_at_a_time = perplex.Model(DEFAULT_MODEL, batch=1)
    assert one_at_a_time.loglikelihood(CHOICES) == results


def test_loglikelihood_equals_perplex_eval(model, perplex_cli, tmp_path):
    data = tmp_path / "requests.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "context": c, "continuation": x}) + "\n" for i, (c, x) in enumerate(CHOICES)))
    samples = tmp_path / "samples.jsonl"
    run([perplex_cli, "eval", "--model", DEFAULT_MODEL, "--task", "loglik", "--data", data, "--samples", samples])
    expected = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [(s["ll"], s["is_greedy"]) for s in expected] == model.loglikelihood(CHOICES)


def test_rolling_perplexity_and_token_logprobs_agree(model):
    (rolling,) = model.loglikelihood_rolling([TEXT])
    report = model.perplexity([TEXT])
    assert report["window"] == "rolling" and report["ctx"] == 512
    (document,) = report["documents"]
    assert rolling == -document["nll"]

    tokens = model.token_logprobs(TEXT)
    ids = model.tokenize(TEXT)
    assert tokens.token_ids.dtype == np.uint32 and tokens.logprobs.dtype == np.float32 and tokens.greedy.dtype == bool
    assert tokens.token_ids.tolist() == ids
    assert tokens.positions.tolist() == list(range(len(ids)))
    assert document["tokens"] == len(ids)
    # The engine sums the f32 log-probabilities in f64, in order.
    nll = 0.0
    for logprob in tokens.logprobs:
        nll -= float(logprob)
    assert nll == document["nll"]
    assert 0 < tokens.greedy.sum() < len(ids)


def test_perplexity_is_the_command_lines_report(model, perplex_cli, tmp_path):
    texts = [TEXT, HELDOUT[5000:5600]]
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text)
    for window, extra in [("rolling", []), ("sliding", ["--stride", "100"]), ("chunks", ["--ctx", "128"])]:
        report_file = tmp_path / f"{window}.json"
        run([perplex_cli, "ppl", "--model", DEFAULT_MODEL, "--data", *files, "--window", window, *extra, "--json", report_file])
        expected = json.loads(report_file.read_text())
        ctx = int(extra[1]) if extra[:1] == ["--ctx"] else None
        stride = int(extra[1]) if extra[:1] == ["--stride"] else None
        report = model.perplexity(texts, window=window, ctx=ctx, stride=stride)
        assert report["total"] == expected["total"], window
        assert [d["nll"] for d in report["documents"]] == [d["nll"] for d in expected["documents"]]
        assert (report["window"], report["ctx"], report["stride"]) == (expected["window"], expected["ctx"], expected["stride"])
    total = report["total"]
    assert total["token_perplexity"] == math.exp(total["nll"] / total["tokens"])
    assert total["bits_per_byte"] == total["nll"] / total["bytes"] / math.log(2)


def test_compensated_sums_are_the_command_lines(perplex_cli, tmp_path):
    compensated = perplex.Model(DEFAULT_MODEL, sums="compensated")
    assert compensated.adapter.endswith("compensated sums")
    text_file, report_file = tmp_path / "text.txt", tmp_path / "report.json"
    text_file.write_text(TEXT)
    run([perplex_cli, "ppl", "--model", DEFAULT_MODEL, "--data", text_file, "--sums", "compensated", "--json", report_file])
    assert compensated.perplexity([TEXT])["total"] == json.loads(report_file.read_text())["total"]
    with pytest.raises(ValueError, match='"plain" or "compensated"'):
        perplex.Model(DEFAULT_MODEL, sums="exact")


FAMILY = REPOSITORY / "models" / "family"


def test_compare_is_the_command_lines_report(perplex_cli, tmp_path):
    base, other = str(FAMILY / "0.9M" / "step500"), str(FAMILY / "0.9M" / "step250")
    texts = [TEXT, HELDOUT[5000:5600]]
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text)
    report_file, tokens_file = tmp_path / "compare.json", tmp_path / "tokens.jsonl"
    run([perplex_cli, "compare", "--base", base, "--model", other, "--data", *files, "--ctx", "96", "--json", report_file, "--per-token", tokens_file])
    expected = json.loads(report_file.read_text())
    result = perplex.compare(base, other, texts, ctx=96, batch="3", per_token=True)
    assert result["statistics"] == expected["statistics"]
    assert (result["total_base"], result["total_model"]) == (expected["total_base"], expected["total_model"])
    # Documents are named by their index in Python, by their file on the command line.
    unnamed = lambda worst: [{k: v for k, v in w.items() if k != "doc"} for w in worst]
    assert unnamed(result["worst"]) == unnamed(expected["worst"]) and len(result["worst"]) == 10
    assert [w["doc"] for w in result["worst"]] == [Path(w["doc"]).stem for w in expected["worst"]]
    assert (result["window"], result["ctx"], result["residency"]) == ("rolling", 96, "both")
    assert 0 < result["statistics"]["kld_mean"]["value"] and 0 < result["statistics"]["same_top"]["value"] < 1

    tokens = result["tokens"]
    lines = [json.loads(line) for line in tokens_file.read_text().splitlines()]
    assert len(tokens["kld"]) == len(lines) == result["statistics"]["count"]
    assert tokens["kld"].dtype == np.float32 and tokens["token_ids"].dtype == np.uint32
    assert tokens["document"].tolist() == [int(Path(t["doc"]).stem) for t in lines]
    assert tokens["positions"].tolist() == [t["pos"] for t in lines]
    assert tokens["token_ids"].tolist() == [t["token_id"] for t in lines]
    # The per-token file writes each f32 in its shortest decimal form: read back as f32, bit for bit.
    as_f32 = lambda key: np.asarray([t[key] for t in lines], dtype=np.float32)
    for key in ["kld", "logprob_base", "logprob_model"]:
        assert np.array_equal(tokens[key], as_f32(key)), key
    assert tokens["top_base"].tolist() == [t["top_base"] for t in lines]
    assert float(tokens["kld"].astype(np.float64).mean()) == pytest.approx(result["statistics"]["kld_mean"]["value"], rel=1e-6)

    # One model at a time: the same numbers.
    swapped = perplex.compare(base, other, texts, ctx=96, swap=True)
    assert swapped["residency"] == "swapped" and swapped["statistics"] == expected["statistics"]
    assert "tokens" not in swapped

    # A log of compared windows, continued after a crash half-way: the same numbers.
    log = tmp_path / "compare.resume"
    assert perplex.compare(base, other, texts, ctx=96, resume=log)["statistics"] == expected["statistics"]
    lines = log.read_text().splitlines()
    assert len(lines) > 4
    log.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    assert perplex.compare(base, other, texts, ctx=96, resume=str(log))["statistics"] == expected["statistics"]
    assert log.read_text().splitlines() == lines


@pytest.mark.parametrize(
    "base, model, kwargs, message",
    [
        (FAMILY / "0.9M" / "step500", REPOSITORY / "models" / "tiny" / "llama-f32", {}, "do not share a tokenizer"),
        (FAMILY / "no-such-model", FAMILY / "0.9M" / "step500", {}, "the base model"),
        (FAMILY / "0.9M" / "step500", FAMILY / "0.9M" / "step250", {"stride": 10}, "--stride applies to --window sliding only"),
        (FAMILY / "0.9M" / "step500", FAMILY / "0.9M" / "step250", {"window": "sliding", "stride": 0}, "at least one token"),
        (FAMILY / "0.9M" / "step500", FAMILY / "0.9M" / "step250", {"sums": "exact"}, '"plain" or "compensated"'),
    ],
)
def test_compare_bad_input_is_a_value_error(base, model, kwargs, message):
    with pytest.raises(ValueError) as raised:
        perplex.compare(str(base), str(model), [TEXT], **kwargs)
    assert message in str(raised.value)


def test_sliding_windows_default_to_half_a_window(model):
    report = model.perplexity([TEXT], window="sliding", ctx=64)
    assert (report["ctx"], report["stride"]) == (64, 32)
    tokens = model.token_logprobs(TEXT, window="sliding", ctx=64)
    # A sliding window never scores a document's first token.
    assert tokens.positions[0] == 1 and len(tokens.positions) == len(model.tokenize(TEXT)) - 1


def test_model_properties(model):
    assert model.max_positions == 512
    assert model.ctx is None
    assert model.name == DEFAULT_MODEL
    assert "perplex.Model" in repr(model)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.perplexity([TEXT], ctx=1024), "longer than the model's 512 positions"),
        (lambda m: m.loglikelihood([("a", "b")], ctx=1024), "longer than the model's 512 positions"),
        (lambda m: m.perplexity([TEXT], window="windows"), 'use "rolling", "sliding" or "chunks"'),
        (lambda m: m.perplexity([TEXT], stride=10), "--stride applies to --window sliding only"),
        (lambda m: m.perplexity([TEXT], window="sliding", ctx=64, stride=65), "must be between 1 and --ctx (64)"),
        (lambda m: m.perplexity([""]), "no token to score"),
        (lambda m: m.loglikelihood([("And God said", "")]), "nothing to score"),
        (lambda m: m.perplexity([TEXT], ctx=0), "positive number of tokens"),
        (lambda m: m.generate_until([(TEXT, {"max_gen_toks": 8})], ctx=1024), "512"),
    ],
)
def test_bad_input_is_a_value_error_with_the_command_lines_message(model, call, message):
    with pytest.raises(ValueError) as raised:
        call(model)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.perplexity(TEXT),
        lambda m: m.loglikelihood_rolling([TEXT, 3]),
        lambda m: m.loglikelihood([("context",)]),
        lambda m: m.tokenize(b"bytes"),
    ],
)
def test_wrong_types_are_type_errors(model, call):
    with pytest.raises(TypeError):
        call(model)


def test_opening_bad_checkpoints_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="no-such-model"):
        perplex.Model(str(tmp_path / "no-such-model"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        perplex.Model(str(broken))
    with pytest.raises(ValueError, match="not a batch size"):
        perplex.Model(DEFAULT_MODEL, batch="many")
    with pytest.raises(ValueError, match="adapter|device"):
        perplex.Model(DEFAULT_MODEL, device="no adapter has this name")


GENERATIONS = [
    ("And God said, Let there be", {"until": ["."], "max_gen_toks": 24}),
    ("In the beginning", {"until": "\n", "max_gen_toks": 16}),
    ("And the evening and the morning were", {"max_gen_toks": 12, "do_sample": False, "temperature": 0.5}),
]


def test_generate_until_equals_perplex_generate(model, perplex_cli, tmp_path):
    answers = model.generate_until(GENERATIONS)
    assert len(answers) == len(GENERATIONS)
    for (context, kwargs), answer in zip(GENERATIONS, answers):
        until = kwargs.get("until", [])
        stops = [arg for stop in ([until] if isinstance(until, str) else until) for arg in ("--until", stop)]
        out = tmp_path / "answer.jsonl"
        run([perplex_cli, "generate", "--model", DEFAULT_MODEL, "--prompt", context,
             "--max-tokens", kwargs["max_gen_toks"], *stops, "--json", out])
        assert json.loads(out.read_text())["answer"]["text"] == answer
        assert not any(stop and stop in answer for stop in ([until] if isinstance(until, str) else until))
    # The same answers one sequence at a time and in the reverse order.
    assert perplex.Model(DEFAULT_MODEL, batch=1).generate_until(GENERATIONS[::-1])[::-1] == answers


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"do_sample": True}, "greedily only"),
        ({"temperature": 0.7}, "greedily only"),
        ({"max_gen_toks": 0}, "positive number of tokens"),
        ({"until": 3}, "string or a list of strings"),
        ({"until": [""]}, "every `until` string is empty"),
        ({"max_gen_toks": 600}, "no room for a context"),
    ],
)
def test_generate_until_bad_requests_are_value_errors(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate_until([("In the beginning", kwargs)])
    with pytest.raises(TypeError):
        model.generate_until(("In the beginning", {}))


def test_progress_reaches_the_total(model):
    reports = []
    model.loglikelihood_rolling([TEXT], progress=lambda done, total: reports.append((done, total)))
    assert reports and reports[-1][0] == reports[-1][1] == len(model.tokenize(TEXT))
    assert all(done <= total for done, total in reports)


def long_texts(copies):
    """Copies of the held-out text (7055 tokens: fourteen 512-token windows each)."""
    return [HELDOUT] * copies


def test_long_calls_release_the_gil():
    model = perplex.Model(DEFAULT_MODEL, batch=1)
    worker = threading.Thread(target=model.loglikelihood_rolling, args=([HELDOUT[:6000]],))
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.005)
    # Holding the GIL for the whole call would have left this thread a tick or two.
    assert ticks > 20


def test_ctrl_c_stops_a_call_with_keyboard_interrupt():
    model = perplex.Model(DEFAULT_MODEL, batch=1)
    reports = []

    def press_ctrl_c_once_started(done, total):
        reports.append((done, total))
        if done > 0 and not any(earlier > 0 for earlier, _ in reports[:-1]):
            # From another thread, as a terminal's Ctrl-C comes: it lands while the call waits
            # on the device with the GIL released.
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        model.loglikelihood_rolling(long_texts(4), progress=press_ctrl_c_once_started)
    # It stopped between passes, long before the end.
    done, total = reports[-1]
    assert done < total / 2, f"stopped after {done} of {total} tokens, {time.monotonic() - started:.1f} s"
    # The next call runs to the end, with the numbers of an uninterrupted model.
    assert model.loglikelihood_rolling([TEXT]) == perplex.Model(DEFAULT_MODEL).loglikelihood_rolling([TEXT])
