"""Reference log-probabilities from Hugging Face transformers, the one implementation that the
scripts writing perplex's test fixtures share (make_fixtures.py, make_smollm2_reference.py,
make_gguf_scores.py): a model runs on a token list in float32, log-probabilities are log_softmax in
float64 of its float32 logits, and the windows of each scoring method (lm-evaluation-harness rolling
windows, Hugging Face's strided sliding window, llama.cpp's chunks) are written out once here.

Importing this module sets the environment every reference run needs: offline Hugging Face, one
thread (the numbers do not depend on the machine's core count), quiet logging.
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def load_f32(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32
    return model



def log_probs(model, ids):
    """(float64 log_softmax of the float32 logits, float32 logits), both [len(ids), V], of `model`
    run on the token list `ids` (one sequence, no padding)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    assert logits.dtype == torch.float32, logits.dtype
    return torch.log_softmax(logits.double(), dim=-1).numpy(), logits.numpy()


def score_targets(model, inputs, targets):
    """{input_ids, logprobs, greedy} of `model` run on `inputs`, where position i predicts
    targets[i]: logprobs[i] = log p(targets[i] | inputs[..=i]), greedy[i] = whether targets[i] is
    the argmax of the logits there."""
    lp, logits = log_probs(model, inputs)
    return {
        "input_ids": list(inputs),
        "logprobs": [float(lp[i, t]) for i, t in enumerate(targets)],
        "greedy": [bool(int(np.argmax(logits[i])) == t) for i, t in enumerate(targets)],
    }


def score_sequence(model, ids):
    """The sequence `ids` predicting itself: logprobs[i] = log p(ids[i+1] | ids[..=i])."""
    return score_targets(model, ids, ids[1:])


def score_after_prefix(model, prefix, tokens):
    """Every token of `tokens` scored in one window after the prefix token, as lm-evaluation-harness's
    first rolling window does: the model reads [prefix] + tokens[:-1], position i predicts tokens[i]."""
    return score_targets(model, [prefix] + tokens[:-1], tokens)


def rolling_windows_own(tokens, prefix, ctx):
    """lm-evaluation-harness rolling windows (context_len=1, made disjoint), written out directly.

    Returns [(input_ids, n_scored)]: the model runs on input_ids and the last n_scored positions
    predict the next tokens of the document; every document token is scored exactly once.
    """
    n = len(tokens)
    out = []
    if n == 0:
        return out
    first = min(ctx, n)
    out.append(([prefix] + tokens[: first - 1], first))
    done = first
    while done < n:
        end = min(n, done + ctx)
        out.append((tokens[end - ctx - 1 : end - 1], end - done))
        done = end
    return out


def rolling_windows_lmeval(tokens, prefix, ctx):
    """The same windows, built with lm_eval.utils (what HFLM.loglikelihood_rolling does)."""
    from lm_eval import utils

    out = []
    for context, cont in map(
        utils.make_disjoint_window,
        utils.get_rolling_token_windows(
            token_list=tokens, prefix_token=prefix, max_seq_len=ctx, context_len=1
        ),
    ):
        # HFLM._loglikelihood_tokens: inp = (context + continuation)[-(max_length + 1):][:-1]
        inp = (context + cont)[-(ctx + 1) :][:-1]
        out.append((inp, len(cont), cont))
    return out


def score_rolling(model, tokens, prefix, ctx):
    own = rolling_windows_own(tokens, prefix, ctx)
    lme = rolling_windows_lmeval(tokens, prefix, ctx)
    assert [(a, b) for a, b, _ in lme] == own, "rolling windows differ from lm_eval.utils"
    nll = 0.0
    count = 0
    scored = []
    for inp, k, cont in lme:
        assert len(inp) <= ctx
        lp, _ = log_probs(model, inp)
        n = len(inp)
        for i, tok in enumerate(cont):
            nll -= float(lp[n - k + i, tok])
        count += k
        scored.extend(cont)
    assert scored == tokens, "rolling windows must score every token exactly once"
    return {"nll": nll, "tokens": count}


def score_sliding(model, tokens, ctx, stride):
    """Hugging Face strided sliding window: score tokens [max(prev_end, begin + 1), end) per window."""
    assert 0 < stride < ctx
    n = len(tokens)
    nll = 0.0
    count = 0
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + ctx, n)
        lp, _ = log_probs(model, tokens[begin:end])
        for j in range(max(prev_end, begin + 1), end):
            nll -= float(lp[j - begin - 1, tokens[j]])
            count += 1
        prev_end = end
        if end == n:
            break
    assert count == max(n - 1, 0)
    return {"nll": nll, "tokens": count}


def score_chunks(model, tokens, ctx, bos, add_bos):
    """llama.cpp llama-perplexity: non-overlapping ctx-sized chunks, second half of each scored."""
    stream = ([bos] if add_bos else []) + list(tokens)
    n_chunk = len(stream) // ctx
    first = ctx // 2
    nll = 0.0
    count = 0
    for c in range(n_chunk):
        inp = stream[c * ctx : (c + 1) * ctx]
        if add_bos:
            inp[0] = bos
        lp, _ = log_probs(model, inp)
        for i in range(first, ctx - 1):
            nll -= float(lp[i, inp[i + 1]])
            count += 1
    assert count == n_chunk * (ctx - 1 - first)
    return {"nll": nll, "tokens": count}


def lmeval_rolling(model_dir, ctx, texts):
    """Log-likelihoods from lm-evaluation-harness HFLM.loglikelihood_rolling (float32, batch 1).

    add_bos_token=False: documents are tokenized without special tokens (the prefix token is the
    only extra token), as in the window definitions above. softmax_dtype=float64: log_softmax in
    float64 from the float32 logits (lm-eval's default, float32 log_softmax summed in float32 per
    window, is a few 1e-6 relative off on documents of a few hundred tokens).
    """
    import lm_eval.models.huggingface as lm_hf
    from lm_eval.api.instance import Instance
    from tqdm import tqdm

    lm_hf.tqdm = lambda *a, **k: tqdm(*a, **{**k, "disable": True})  # quiet progress bars
    lm = lm_hf.HFLM(
        pretrained=model_dir,
        dtype="float32",
        max_length=ctx,
        batch_size=1,
        device="cpu",
        add_bos_token=False,
        softmax_dtype="float64",
    )
    reqs = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
        for i, t in enumerate(texts)
    ]
    out = lm.loglikelihood_rolling(reqs, disable_tqdm=True)
    info = {"prefix": lm.prefix_token_id, "tokens": [lm.tok_encode(t) for t in texts]}
    del lm
    return [float(x) for x in out], info


MAX_DEV = [0.0]  # largest |a - b| seen by check_close


def check_close(a, b, what, tol=1e-5):
    """|a - b| <= tol."""
    MAX_DEV[0] = max(MAX_DEV[0], abs(a - b))
    if not abs(a - b) <= tol:
        raise AssertionError(f"{what}: {a!r} vs {b!r}")


def dump_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1, allow_nan=False)
        f.write("\n")
