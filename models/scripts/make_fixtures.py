#!/usr/bin/env python3
"""Build the tiny random test checkpoints in models/tiny/ and their reference outputs.

    python models/scripts/make_fixtures.py [OUT_DIR] [VARIANT ...]   (default: models/tiny, all variants)

Each variant directory gets config.json, model.safetensors, tokenizer.json, tokenizer_config.json and
reference.json. Everything is deterministic (fixed seeds) and computed in float32 on the CPU with
Hugging Face transformers; log-probabilities are taken with log_softmax in float64 from the float32
logits. The rolling-window numbers are cross-checked against lm-evaluation-harness (HFLM), and the
transformers outputs against an independent float64 numpy forward pass of the saved files (which must
read every tensor); reloading the saved directory must reproduce the logits of the model as built.
All variants share one 360-token byte-level BPE tokenizer (<s> = 0, </s> = 1); config.json is written
in the classic Hugging Face layout of each family (rope_theta / rope_scaling, rotary_pct, n_embd, ...).
Weights are random (matrices N(0, 0.2), biases and norm biases 0.1 N(0, 1), norm weights 1 + 0.1 N(0, 1),
or 0.1 N(0, 1) as stored for Gemma's (1 + weight) norms), so the models are far from uniform.

Variants and what they exercise:
  llama-f32         Llama, GQA 6/2 heads, hidden 72, untied head, vocab 363 (> tokenizer).
  llama-tied-f16    Llama, MHA 5 heads (head_dim 16), 3 layers, tied embeddings, float16 weights.
  llama3-bf16       Llama 3 rope_scaling (all three frequency regimes), q/k/v/o biases, MQA, bfloat16.
  mistral-f32       Mistral, head_dim 12 given explicitly, sliding_window null.
  gpt2-f32          GPT-2: learned positions, LayerNorm with biases, Conv1D [in, out] weights, fused
                    c_attn, gelu_new, tied head, n_inner null (4 * n_embd), vocab 361.
  gpt-neox-f16      Pythia-like GPT-NeoX: fused query_key_value laid out per head, partial rotary
                    (rotary_pct 0.5 of head_dim 12), parallel residual, exact GELU, embed_out head,
                    float16, vocab 368.
  gpt-neox-seq-f32  GPT-NeoX with the sequential residual and full rotary.
  qwen2-bf16        Qwen2: q/k/v biases (no o bias), GQA 4/2, rope_theta 1e6, tied, bfloat16, and a
                    sliding_window (16) that use_sliding_window=false switches off.
  phi3-f32          Phi-3: fused qkv_proj and gate_up_proj, GQA 4/2, sliding_window 128 (covers the
                    whole 128-token context; 127 would change the results), pad_token_id 1.
  gemma-f32         Gemma: (1 + weight) RMSNorm, embeddings times sqrt(hidden), MQA, head_dim 16,
                    legacy hidden_act "gelu" meaning the tanh GELU, tied.
  gemma2-f32        Gemma 2: pre/post norms around attention and MLP, query_pre_attn_scalar 24
                    (head_dim 16, heads * head_dim = 64 != hidden 48), attention and final logit
                    soft-capping (both matter), sliding window 8 on layers 0 and 2 (default pattern).
  gemma3-f32        Gemma 3 text: as Gemma 2 plus per-head (1 + weight) q/k RMSNorm, layer_types
                    sliding/full/sliding with window 8, rope_local_base_freq 1e4 on sliding layers and
                    rope_theta 1e6 on full ones, no soft-capping.
  olmo2-f32         OLMo 2: no input norms; RMSNorm on the attention and MLP outputs, q/k RMSNorm over
                    the whole projection (48 and 24 wide, GQA 4/2), rope_theta 5e5, untied.
The "sensitive" entries of the newer variants check (numpy, float64) that each feature listed there
moves the log-probabilities by a clear margin, so the fixtures really exercise it.

The window-scoring helpers in this file (rolling / sliding / chunks) are also used by
make_smollm2_reference.py.

reference.json layout:
  documents: [text, ...]
  sequences: [{input_ids, logprobs, greedy}, ...]
      logprobs[i] = log p(input_ids[i+1] | input_ids[..=i]), greedy[i] = argmax(logits[i]) == input_ids[i+1]
  windows: [{mode, ctx, [stride], docs: [{nll, tokens}, ...]}, ...]
      nll = sum of -log p over the scored tokens, tokens = how many tokens were scored.
      mode "rolling": lm-evaluation-harness loglikelihood_rolling (prefix token = bos, else eos)
      mode "sliding": Hugging Face "perplexity of fixed-length models" (strided sliding window)
      mode "chunks":  llama.cpp llama-perplexity (second half of each ctx-sized chunk scored)
  Documents are tokenized without special tokens. The Llama/Mistral variants have rolling ctx 16 and
  128, sliding ctx 24 stride 10 and chunks ctx 20; the others only rolling ctx 16 and 128.
"""
import json
import math
import os
import sys
import time

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

# ---------------------------------------------------------------------------------------------
# Texts (public domain)
# ---------------------------------------------------------------------------------------------

# Tokenizer training text: King James Bible, Genesis 1:1-20.
TRAIN_TEXT = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep. "
    "And the Spirit of God moved upon the face of the waters.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
    "And God called the light Day, and the darkness he called Night. "
    "And the evening and the morning were the first day.",
    "And God said, Let there be a firmament in the midst of the waters, "
    "and let it divide the waters from the waters.",
    "And God made the firmament, and divided the waters which were under the firmament "
    "from the waters which were above the firmament: and it was so.",
    "And God called the firmament Heaven. And the evening and the morning were the second day.",
    "And God said, Let the waters under the heaven be gathered together unto one place, "
    "and let the dry land appear: and it was so.",
    "And God called the dry land Earth; and the gathering together of the waters called he Seas: "
    "and God saw that it was good.",
    "And God said, Let the earth bring forth grass, the herb yielding seed, and the fruit tree "
    "yielding fruit after his kind, whose seed is in itself, upon the earth: and it was so.",
    "And the earth brought forth grass, and herb yielding seed after his kind, and the tree "
    "yielding fruit, whose seed was in itself, after his kind: and God saw that it was good.",
    "And the evening and the morning were the third day.",
    "And God said, Let there be lights in the firmament of the heaven to divide the day from the "
    "night; and let them be for signs, and for seasons, and for days, and years:",
    "And let them be for lights in the firmament of the heaven to give light upon the earth: "
    "and it was so.",
    "And God made two great lights; the greater light to rule the day, and the lesser light to "
    "rule the night: he made the stars also.",
    "And God set them in the firmament of the heaven to give light upon the earth,",
    "And to rule over the day and over the night, and to divide the light from the darkness: "
    "and God saw that it was good.",
    "And the evening and the morning were the fourth day.",
    "And God said, Let the waters bring forth abundantly the moving creature that hath life, "
    "and fowl that may fly above the earth in the open firmament of heaven.",
]

# Test documents (not part of the tokenizer training text).
# 0: Jane Austen, Pride and Prejudice (1813), opening sentences.
# 1: King James Bible, Psalm 23, followed by Goethe, "Wandrers Nachtlied II" (1780; non-ASCII).
DOCUMENTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\n\nHowever little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.\n",
    "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures: he "
    "leadeth me beside the still waters. He restoreth my soul: he leadeth me in the paths of "
    "righteousness for his name's sake. Yea, though I walk through the valley of the shadow of "
    "death, I will fear no evil: for thou art with me; thy rod and thy staff they comfort me. "
    "Thou preparest a table before me in the presence of mine enemies: thou anointest my head "
    "with oil; my cup runneth over. Surely goodness and mercy shall follow me all the days of my "
    "life: and I will dwell in the house of the LORD for ever.\n\n"
    "\u00dcber allen Gipfeln\nIst Ruh,\nIn allen Wipfeln\nSp\u00fcrest du\nKaum einen Hauch;\n"
    "Die V\u00f6gelein schweigen im Walde.\nWarte nur, balde\nRuhest du auch.\n",
]

# ---------------------------------------------------------------------------------------------
# Scoring helpers (shared with make_smollm2_reference.py)
# ---------------------------------------------------------------------------------------------


def log_probs(model, ids):
    """(float64 log_softmax of the float32 logits, float32 logits), both [len(ids), V], of `model`
    run on the token list `ids` (one sequence, no padding)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    assert logits.dtype == torch.float32, logits.dtype
    return torch.log_softmax(logits.double(), dim=-1).numpy(), logits.numpy()


def score_sequence(model, ids):
    """{input_ids, logprobs, greedy}: logprobs[i] = log p(ids[i+1] | ids[..=i])."""
    lp, logits = log_probs(model, ids)
    n = len(ids)
    return {
        "input_ids": list(ids),
        "logprobs": [float(lp[i, ids[i + 1]]) for i in range(n - 1)],
        "greedy": [bool(int(np.argmax(logits[i])) == ids[i + 1]) for i in range(n - 1)],
    }


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


class _UsedWeights(dict):
    """The checkpoint's tensors; remembers which ones the forward pass read."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.used = set()

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self:
            return self[key]
        return default


def load_weights_f64(model_dir):
    from safetensors.torch import load_file

    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    return _UsedWeights({k: v.to(torch.float64).numpy() for k, v in tensors.items()})


def numpy_logits_from_torch(model_dir, ids, overrides=None):
    """Independent float64 numpy forward pass of a checkpoint, read straight from config.json (classic
    keys) and model.safetensors; checks what the transformers numbers mean. `overrides` replaces
    config keys (used to check that a feature such as soft-capping changes the result)."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    cfg.update(overrides or {})
    w = load_weights_f64(model_dir)
    logits = _numpy_forward(cfg, w, ids)
    unused = set(w) - w.used
    assert not unused, f"{model_dir}: tensors the numpy forward did not read: {sorted(unused)}"
    return logits


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def check_numpy_forward(model, model_dir, ids, tol=2e-4):
    """transformers' float32 log-probabilities agree with the float64 numpy forward pass."""
    ref = _log_softmax(numpy_logits_from_torch(model_dir, ids))
    lp, _ = log_probs(model, ids)
    err = float(np.abs(lp - ref).max())
    assert err < tol, f"{model_dir}: transformers vs numpy forward differ by {err}"
    return err


def _rope_inv_freq(cfg, dim, theta=None, scaling=None):
    """Inverse frequencies of a rotary embedding over `dim` dimensions (`scaling`: llama3 or None)."""
    theta = cfg.get("rope_theta", 10000.0) if theta is None else theta
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    rs = cfg.get("rope_scaling") if scaling is None else scaling
    if not rs:
        return inv
    assert rs["rope_type"] == "llama3", rs
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > old / lo, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    return np.where(medium, (1 - smooth) * inv / factor + smooth * inv, out)


def _rope(x, inv):
    """Hugging Face rotary layout: x [heads, n, head_dim]; the first 2 * len(inv) dims of each head
    are rotated as two halves (i paired with i + len(inv)); the remaining dims pass through."""
    n, half = x.shape[-2], len(inv)
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin, rest], axis=-1)


def _attend(q, k, v, scale, window=None, softcap=None):
    """Causal attention: q [nh, n, hd], k/v [nkv, n, hd] (query head h uses kv head h // (nh/nkv)).
    `window`: key j is visible from query i iff i - window < j <= i. `softcap`: tanh capping of the
    scaled scores before masking. Returns [n, nh * hd]."""
    nh, n = q.shape[0], q.shape[1]
    rep = nh // k.shape[0]
    k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
    s = q @ k.transpose(0, 2, 1) * scale
    if softcap:
        s = np.tanh(s / softcap) * softcap
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    s = np.where(allowed, s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return (s @ v).transpose(1, 0, 2).reshape(n, -1)


def _heads(x, heads):  # [n, heads * hd] -> [heads, n, hd]
    return x.reshape(x.shape[0], heads, -1).transpose(1, 0, 2)


def _gelu_erf(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


_ACT = {
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "gelu": _gelu_erf,  # transformers' "gelu" is the exact erf GELU (except Gemma v1, see below)
    "gelu_erf": _gelu_erf,  # only used by the sensitivity checks
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
}


def _layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _rms_norm(x, g, eps, offset=0.0):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (offset + g)


def _numpy_forward(cfg, w, ids):
    mt = cfg["model_type"]
    if mt == "gpt2":
        return _numpy_gpt2(cfg, w, ids)
    if mt == "gpt_neox":
        return _numpy_gpt_neox(cfg, w, ids)
    return _numpy_decoder(cfg, w, ids)


def _numpy_gpt2(cfg, w, ids):
    """GPT-2: learned positions, pre-LayerNorm blocks, Conv1D weights stored [in, out] (y = x @ W + b),
    fused c_attn output [q | k | v] (each n_embd wide, heads contiguous inside each)."""
    H, nh, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = H // nh
    act = _ACT[cfg.get("activation_function", "gelu_new")]
    pre = "transformer." if "transformer.wte.weight" in w else ""
    n = len(ids)

    def conv1d(x, name):
        return x @ w[name + ".weight"] + w[name + ".bias"]

    def ln(x, name):
        return _layer_norm(x, w[name + ".weight"], w[name + ".bias"], eps)

    h = w[pre + "wte.weight"][ids] + w[pre + "wpe.weight"][np.arange(n)]
    for i in range(cfg["n_layer"]):
        p = f"{pre}h.{i}."
        qkv = conv1d(ln(h, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (_heads(qkv[:, j * H : (j + 1) * H], nh) for j in range(3))
        scale = hd**-0.5 if cfg.get("scale_attn_weights", True) else 1.0
        if cfg.get("scale_attn_by_inverse_layer_idx", False):
            scale /= i + 1
        h = h + conv1d(_attend(q, k, v, scale), p + "attn.c_proj")
        h = h + conv1d(act(conv1d(ln(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    h = ln(h, pre + "ln_f")
    return h @ w.get("lm_head.weight", w[pre + "wte.weight"]).T


def _numpy_gpt_neox(cfg, w, ids):
    """GPT-NeoX / Pythia: pre-LayerNorm, fused query_key_value whose output is per head [q | k | v]
    (head_dim each), partial rotary over the first rotary_pct * head_dim dims, parallel or sequential
    residual, untied embed_out head."""
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    hd = H // nh
    rot = int(hd * cfg.get("rotary_pct", 0.25))
    inv = _rope_inv_freq(cfg, rot, theta=cfg.get("rotary_emb_base", 10000.0), scaling=False)
    act = _ACT[cfg.get("hidden_act", "gelu")]

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        b = w.get(name + ".bias")
        return y if b is None else y + b

    def ln(x, name):
        return _layer_norm(x, w[name + ".weight"], w[name + ".bias"], eps)

    h = w["gpt_neox.embed_in.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        qkv = _heads(lin(ln(h, p + "input_layernorm"), p + "attention.query_key_value"), nh)
        q, k, v = qkv[..., :hd], qkv[..., hd : 2 * hd], qkv[..., 2 * hd :]
        a = lin(_attend(_rope(q, inv), _rope(k, inv), v, hd**-0.5), p + "attention.dense")

        def mlp(x):
            up = lin(ln(x, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h")
            return lin(act(up), p + "mlp.dense_4h_to_h")

        if cfg.get("use_parallel_residual", True):
            h = h + a + mlp(h)
        else:
            h = h + a
            h = h + mlp(h)
    h = ln(h, "gpt_neox.final_layer_norm")
    head = w.get("embed_out.weight")
    return h @ (head if head is not None else w["lm_head.weight"]).T


def _layer_types(cfg):
    """'sliding' / 'full' per layer, the way transformers reads the classic config keys."""
    mt, L, W = cfg["model_type"], cfg["num_hidden_layers"], cfg.get("sliding_window")
    if cfg.get("layer_types"):
        return ["sliding" if t == "sliding_attention" else "full" for t in cfg["layer_types"]]
    if mt == "gemma2":
        return ["sliding" if (i + 1) % 2 else "full" for i in range(L)]
    if mt == "gemma3_text":
        pattern = cfg.get("sliding_window_pattern", 6)
        return ["sliding" if (i + 1) % pattern else "full" for i in range(L)]
    if mt == "qwen2":
        on = cfg.get("use_sliding_window", False) and W is not None
        return ["sliding" if on and i >= cfg.get("max_window_layers", 28) else "full" for i in range(L)]
    if mt in ("mistral", "phi3") and W is not None:
        return ["sliding"] * L
    return ["full"] * L


def _numpy_decoder(cfg, w, ids):
    """Llama-like decoders: llama, mistral, qwen2, phi3, olmo2, gemma, gemma2, gemma3_text."""
    mt = cfg["model_type"]
    gemma = mt in ("gemma", "gemma2", "gemma3_text")
    sandwich = mt in ("gemma2", "gemma3_text")  # extra norms on the attention / MLP outputs
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    offset = 1.0 if gemma else 0.0  # Gemma RMSNorm multiplies by (1 + weight)
    if mt == "gemma":  # transformers 5 reads hidden_act and maps "gelu" to the tanh approximation
        act = cfg.get("hidden_act", "gelu_pytorch_tanh")
        act = "gelu_pytorch_tanh" if act == "gelu" else act
    elif sandwich:
        act = cfg.get("hidden_activation", "gelu_pytorch_tanh")
    else:
        act = cfg.get("hidden_act", "silu")
    act = _ACT[act]
    scale = cfg["query_pre_attn_scalar"] ** -0.5 if sandwich else hd**-0.5
    attn_cap = cfg.get("attn_logit_softcapping") if mt == "gemma2" else None  # gemma3 ignores it
    final_cap = cfg.get("final_logit_softcapping") if sandwich else None
    types = _layer_types(cfg)
    assert len(types) == cfg["num_hidden_layers"]
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    if mt == "gemma3_text":
        inv = {
            "full": _rope_inv_freq(cfg, rot, theta=cfg.get("rope_theta", 1e6)),
            "sliding": _rope_inv_freq(cfg, rot, theta=cfg.get("rope_local_base_freq", 1e4), scaling=False),
        }
    else:
        inv = {"full": _rope_inv_freq(cfg, rot)}
        inv["sliding"] = inv["full"]

    def norm(x, name):
        return _rms_norm(x, w[name], eps, offset)

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        b = w.get(name + ".bias")
        return y if b is None else y + b

    h = w["model.embed_tokens.weight"][ids]
    if gemma:
        h = h * float(np.float32(math.sqrt(H)))  # transformers: float32 tensor sqrt(hidden_size)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        x = h if mt == "olmo2" else norm(h, p + "input_layernorm.weight")
        if mt == "phi3":  # fused rows [q (nh*hd) | k (nkv*hd) | v (nkv*hd)]
            qkv = lin(x, a + "qkv_proj")
            q, k, v = np.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
        else:
            q, k, v = lin(x, a + "q_proj"), lin(x, a + "k_proj"), lin(x, a + "v_proj")
        if mt == "olmo2":  # q/k norms over the whole projection (all heads together)
            q, k = norm(q, a + "q_norm.weight"), norm(k, a + "k_norm.weight")
        q, k, v = _heads(q, nh), _heads(k, nkv), _heads(v, nkv)
        if mt == "gemma3_text":  # q/k norms per head, (1 + weight), before the rotary embedding
            q, k = norm(q, a + "q_norm.weight"), norm(k, a + "k_norm.weight")
        t = types[i]
        window = cfg["sliding_window"] if t == "sliding" else None
        q, k = _rope(q, inv[t]), _rope(k, inv[t])
        o = lin(_attend(q, k, v, scale, window, attn_cap), a + "o_proj")
        if sandwich or mt == "olmo2":
            o = norm(o, p + "post_attention_layernorm.weight")
        h = h + o
        if mt == "olmo2":
            x = h
        elif sandwich:
            x = norm(h, p + "pre_feedforward_layernorm.weight")
        else:
            x = norm(h, p + "post_attention_layernorm.weight")
        if mt == "phi3":  # fused rows [gate (I) | up (I)]
            g, u = np.split(lin(x, p + "mlp.gate_up_proj"), 2, axis=-1)
        else:
            g, u = lin(x, p + "mlp.gate_proj"), lin(x, p + "mlp.up_proj")
        m = lin(act(g) * u, p + "mlp.down_proj")
        if sandwich or mt == "olmo2":
            m = norm(m, p + "post_feedforward_layernorm.weight")
        h = h + m
    h = norm(h, "model.norm.weight")
    head = w.get("lm_head.weight")
    logits = h @ (head if head is not None else w["model.embed_tokens.weight"]).T
    if final_cap:
        logits = np.tanh(logits / final_cap) * final_cap
    return logits


MAX_DEV = [0.0]  # largest |a - b| seen by check_close


def check_close(a, b, what, tol=1e-5):
    """|a - b| <= tol."""
    MAX_DEV[0] = max(MAX_DEV[0], abs(a - b))
    if not abs(a - b) <= tol:
        raise AssertionError(f"{what}: {a!r} vs {b!r}")


def load_f32(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32
    return model


def dump_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1, allow_nan=False)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

BOS, EOS = "<s>", "</s>"
TOKENIZER_VOCAB = 360


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT, trainer=trainer)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    return tok


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------

VARIANTS = [
    dict(
        name="llama-f32",
        arch="LlamaForCausalLM",
        model_type="llama",
        seed=1001,
        extra_vocab=3,
        hidden_size=72,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=100,
        num_hidden_layers=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rope_scaling=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        dtype="float32",
        add_bos_token=True,
    ),
    dict(
        name="llama-tied-f16",
        arch="LlamaForCausalLM",
        model_type="llama",
        seed=1002,
        extra_vocab=0,
        hidden_size=80,
        num_attention_heads=5,
        num_key_value_heads=5,
        intermediate_size=136,
        num_hidden_layers=3,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rope_scaling=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        dtype="float16",
        add_bos_token=False,
        softmax_dtype="float64",
    ),
    dict(
        name="llama3-bf16",
        arch="LlamaForCausalLM",
        model_type="llama",
        seed=1003,
        extra_vocab=3,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        intermediate_size=90,
        num_hidden_layers=2,
        max_position_embeddings=256,
        rope_theta=500000.0,
        # original_max_position_embeddings=64 puts the head_dim-16 rotary wavelengths (6.3, 32.5,
        # 169, ...) in all three llama3 regimes: kept (< 16), smoothly blended (16..64), divided
        # by `factor` (> 64).
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=True,
        mlp_bias=False,
        dtype="bfloat16",
        add_bos_token=False,
        softmax_dtype="float64",
    ),
    dict(
        name="mistral-f32",
        arch="MistralForCausalLM",
        model_type="mistral",
        seed=1004,
        extra_vocab=0,
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        intermediate_size=70,
        num_hidden_layers=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rope_scaling=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        sliding_window=None,
        dtype="float32",
        add_bos_token=False,
        softmax_dtype="float64",
    ),
]

# Variants of other families. "config" holds the family's own config.json keys, written as is (classic
# Hugging Face layout); config_json adds architectures, model_type, vocab_size, initializer_range, token
# ids, use_cache and torch_dtype. "init" changes the random initialisation of some tensors (regex on the
# parameter name -> std for matrices, or -> centre for norm weights). "sensitive" lists config changes
# that must move the float64 numpy log-probabilities by more than the given amount, so that the
# fixture really exercises the feature. These variants keep only the two rolling windows.
SHORT_WINDOWS = [
    {"mode": "rolling", "ctx": 16},
    {"mode": "rolling", "ctx": 128},
]

VARIANTS += [
    dict(
        name="gpt2-f32",
        arch="GPT2LMHeadModel",
        model_type="gpt2",
        seed=1005,
        extra_vocab=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        dtype="float32",
        add_bos_token=False,
        windows=SHORT_WINDOWS,
        config={
            "activation_function": "gelu_new",
            "n_embd": 48,
            "n_head": 4,
            "n_layer": 2,
            "n_inner": None,
            "n_positions": 128,
            "n_ctx": 128,
            "layer_norm_epsilon": 1e-5,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "attn_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "resid_pdrop": 0.1,
            "tie_word_embeddings": True,
        },
        sensitive=[("exact-erf GELU instead of gelu_new", {"activation_function": "gelu_erf"}, 1e-3)],
    ),
    dict(
        name="gpt-neox-f16",
        arch="GPTNeoXForCausalLM",
        model_type="gpt_neox",
        seed=1006,
        extra_vocab=8,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        dtype="float16",
        add_bos_token=False,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 48,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "intermediate_size": 100,
            "hidden_act": "gelu",
            "rotary_pct": 0.5,
            "rotary_emb_base": 10000,
            "use_parallel_residual": True,
            "max_position_embeddings": 128,
            "layer_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        sensitive=[
            ("sequential residual", {"use_parallel_residual": False}, 1e-2),
            ("full rotary", {"rotary_pct": 1.0}, 1e-2),
            ("tanh GELU instead of exact", {"hidden_act": "gelu_new"}, 1e-3),
        ],
    ),
    dict(
        name="gpt-neox-seq-f32",
        arch="GPTNeoXForCausalLM",
        model_type="gpt_neox",
        seed=1007,
        extra_vocab=0,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        dtype="float32",
        add_bos_token=False,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 48,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "intermediate_size": 100,
            "hidden_act": "gelu",
            "rotary_pct": 1.0,
            "rotary_emb_base": 10000,
            "use_parallel_residual": False,
            "max_position_embeddings": 128,
            "layer_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        sensitive=[("parallel residual", {"use_parallel_residual": True}, 1e-2)],
    ),
    dict(
        name="qwen2-bf16",
        arch="Qwen2ForCausalLM",
        model_type="qwen2",
        seed=1008,
        extra_vocab=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        dtype="bfloat16",
        add_bos_token=False,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 64,
            "intermediate_size": 90,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            # As in the Qwen2.5 configs: a sliding_window value that is switched off.
            "use_sliding_window": False,
            "sliding_window": 16,
            "max_window_layers": 1,
            "attention_dropout": 0.0,
            "tie_word_embeddings": True,
        },
        sensitive=[
            (
                "sliding_window 16 applied despite use_sliding_window false",
                {"use_sliding_window": True, "max_window_layers": 0},
                1e-2,
            ),
        ],
    ),
    dict(
        name="phi3-f32",
        arch="Phi3ForCausalLM",
        model_type="phi3",
        seed=1009,
        extra_vocab=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        dtype="float32",
        add_bos_token=False,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 48,
            "intermediate_size": 70,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 128,
            "original_max_position_embeddings": 128,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            # Phi-3-mini-4k has sliding_window 2047 (< 4096); here the window (keys i-127..i) covers
            # every sequence of at most max_position_embeddings tokens.
            "sliding_window": 128,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "pad_token_id": 1,
            "tie_word_embeddings": False,
        },
        sensitive=[("sliding window 127", {"sliding_window": 127}, 1e-2)],
    ),
    dict(
        name="gemma-f32",
        arch="GemmaForCausalLM",
        model_type="gemma",
        seed=1010,
        extra_vocab=0,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        dtype="float32",
        add_bos_token=True,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 64,
            "intermediate_size": 90,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 16,
            # As in google/gemma-2b / gemma-7b: legacy "gelu", which means the tanh approximation.
            "hidden_act": "gelu",
            "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": True,
        },
        sensitive=[("exact-erf GELU", {"hidden_act": "gelu_erf"}, 1e-3)],
    ),
    dict(
        name="gemma2-f32",
        arch="Gemma2ForCausalLM",
        model_type="gemma2",
        seed=1011,
        extra_vocab=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        dtype="float32",
        add_bos_token=True,
        windows=SHORT_WINDOWS,
        # Larger attention scores and logits, so that both soft-caps bite (each moves the log-probs
        # by ~0.9 nats somewhere; see "sensitive").
        init={"std": {r"\.(q|k)_proj\.weight$": 0.4}, "norm_centre": {r"^model\.norm\.weight$": 0.5}},
        config={
            "hidden_size": 48,
            "intermediate_size": 70,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "query_pre_attn_scalar": 24,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 8,
            "cache_implementation": "hybrid",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": True,
        },
        sensitive=[
            ("no attention soft-cap", {"attn_logit_softcapping": None}, 0.1),
            ("no final soft-cap", {"final_logit_softcapping": None}, 0.1),
            ("no sliding window", {"sliding_window": None}, 1e-2),
            ("sliding window 9", {"sliding_window": 9}, 1e-3),
            ("scale 1/sqrt(head_dim)", {"query_pre_attn_scalar": 16}, 1e-2),
        ],
    ),
    dict(
        name="gemma3-f32",
        arch="Gemma3ForCausalLM",
        model_type="gemma3_text",
        seed=1012,
        extra_vocab=3,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        dtype="float32",
        add_bos_token=True,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 48,
            "intermediate_size": 70,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": None,
            "query_pre_attn_scalar": 16,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
            "sliding_window": 8,
            "sliding_window_pattern": 2,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "cache_implementation": "hybrid",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": True,
        },
        sensitive=[
            ("no sliding window", {"sliding_window": None}, 1e-2),
            ("global rope base on every layer", {"rope_local_base_freq": 1000000.0}, 1e-2),
            ("local rope base on every layer", {"rope_theta": 10000.0}, 1e-2),
            ("all layers sliding", {"layer_types": ["sliding_attention"] * 3}, 1e-2),
        ],
    ),
    dict(
        name="olmo2-f32",
        arch="Olmo2ForCausalLM",
        model_type="olmo2",
        seed=1013,
        extra_vocab=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        dtype="float32",
        add_bos_token=False,
        windows=SHORT_WINDOWS,
        config={
            "hidden_size": 48,
            "intermediate_size": 70,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            # Olmo2Config allows grouped-query attention (OLMo-2 32B uses it); k_norm is then
            # num_key_value_heads * head_dim wide, narrower than q_norm.
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 500000.0,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": False,
        },
    ),
]

INITIALIZER_RANGE = 0.2

WINDOWS = [
    {"mode": "rolling", "ctx": 16},
    {"mode": "rolling", "ctx": 128},
    {"mode": "sliding", "ctx": 24, "stride": 10},
    {"mode": "chunks", "ctx": 20},
]

_CONFIG_DEFAULTS = (
    ("initializer_range", INITIALIZER_RANGE),
    ("bos_token_id", 0),
    ("eos_token_id", 1),
    ("pad_token_id", None),
    ("use_cache", True),
)


def config_json(v, vocab_size):
    """config.json in the classic Hugging Face layout (rope_theta / rope_scaling keys)."""
    if "config" in v:
        cfg = {"architectures": [v["arch"]], "model_type": v["model_type"], "vocab_size": vocab_size}
        cfg.update(v["config"])
        for k, val in _CONFIG_DEFAULTS:
            cfg.setdefault(k, val)
        cfg["torch_dtype"] = v["dtype"]
        return cfg
    head_dim = v.get("head_dim", v["hidden_size"] // v["num_attention_heads"])
    cfg = {
        "architectures": [v["arch"]],
        "model_type": v["model_type"],
        "vocab_size": vocab_size,
        "hidden_size": v["hidden_size"],
        "intermediate_size": v["intermediate_size"],
        "num_hidden_layers": v["num_hidden_layers"],
        "num_attention_heads": v["num_attention_heads"],
        "num_key_value_heads": v["num_key_value_heads"],
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": v["max_position_embeddings"],
        "initializer_range": INITIALIZER_RANGE,
        "rms_norm_eps": v["rms_norm_eps"],
        "rope_theta": v["rope_theta"],
        "rope_scaling": v["rope_scaling"],
        "tie_word_embeddings": v["tie_word_embeddings"],
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": None,
        "use_cache": True,
        "attention_dropout": 0.0,
        "torch_dtype": v["dtype"],
    }
    if v["model_type"] == "llama":
        cfg["attention_bias"] = v["attention_bias"]
        cfg["mlp_bias"] = v["mlp_bias"]
        cfg["pretraining_tp"] = 1
    else:
        cfg["sliding_window"] = v["sliding_window"]
    return cfg


def _norm_params(model):
    """{parameter name: True if the norm multiplies by (1 + weight) (Gemma), else False} for the
    parameters of LayerNorm / RMSNorm modules."""
    out = {}
    for mname, mod in model.named_modules():
        cls = type(mod).__name__
        if isinstance(mod, torch.nn.LayerNorm) or cls.endswith("RMSNorm"):
            for pname, _ in mod.named_parameters(recurse=False):
                out[f"{mname}.{pname}"] = cls.startswith("Gemma")
    return out


def randomize(model, seed, init=None):
    """Deterministic weights: N(0, INITIALIZER_RANGE) matrices, 0.1 N(0,1) biases (linear and norm),
    norm weights 1 + 0.1 N(0,1) (stored 0.1 N(0,1) for Gemma's (1 + weight) norms). `init` overrides
    the std of matching matrices ("std") or the centre of matching norm weights ("norm_centre")."""
    import re

    init = init or {}

    def override(kind, name, default):
        for pattern, val in init.get(kind, {}).items():
            if re.search(pattern, name):
                return val
        return default

    norms = _norm_params(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith(".weight") and (name in norms or name.endswith("norm.weight")):
                assert name in norms, name
                centre = 0.0 if norms[name] else 1.0
                assert bool(torch.all(p == centre)), f"{name}: unexpected initial norm weight"
                p.copy_(override("norm_centre", name, centre) + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                assert p.dim() == 2, name
                p.copy_(override("std", name, INITIALIZER_RANGE) * noise)


def _probe_ids(n, vocab):
    return [(7 * i + 3) % vocab for i in range(n)]


def build_variant(v, tok, out_root):
    from transformers import AutoConfig, AutoModelForCausalLM

    d = os.path.join(out_root, v["name"])
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))

    vocab_size = tok.get_vocab_size() + v["extra_vocab"]
    cfg = config_json(v, vocab_size)
    dump_json(cfg, os.path.join(d, "config.json"))

    # Build the model from the config file, randomise, save in the target dtype.
    config = AutoConfig.from_pretrained(d)
    torch.manual_seed(v["seed"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    assert type(model).__name__ == v["arch"], type(model).__name__
    randomize(model, v["seed"], v.get("init"))
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    tied = head.data_ptr() == emb.data_ptr()
    assert tied == v["tie_word_embeddings"], (tied, v["tie_word_embeddings"])
    # The logits of the weights as saved (rounded to the target dtype), computed in float32: what
    # transformers must give back from the saved directory. (Rounding only the parameters; casting the
    # whole model would also round buffers such as the rotary inverse frequencies.)
    dtype = getattr(torch, v["dtype"])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    model.eval()
    probe = _probe_ids(v["max_position_embeddings"], tok.get_vocab_size())
    want = log_probs(model, probe)[1]
    model = model.to(dtype)
    model.save_pretrained(d)
    del model
    files = sorted(os.listdir(d))
    assert "model.safetensors" in files and not any("index" in f for f in files), files
    # save_pretrained rewrites config.json in the library's own layout; keep the classic one.
    dump_json(cfg, os.path.join(d, "config.json"))
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))

    tok.save(os.path.join(d, "tokenizer.json"))
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": v["add_bos_token"],
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": v["max_position_embeddings"],
    }
    dump_json(tcfg, os.path.join(d, "tokenizer_config.json"))
    check_saved(d, v, cfg)
    got = log_probs(load_f32(d), probe)[1]
    err = float(np.abs(got - want).max())
    assert err <= 1e-5, f"{d}: reloading the saved directory changes the logits by {err}"
    return d


def describe(d):
    """Tensor names, dtypes and shapes of model.safetensors, one per line."""
    from safetensors import safe_open

    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        return [f"{n} {f.get_slice(n).get_dtype()} {list(f.get_slice(n).get_shape())}" for n in f.keys()]


def check_saved(d, v, cfg):
    """The saved files hold what was asked for: dtypes, tensor names, tie, rope parameters."""
    from safetensors import safe_open
    from transformers import AutoConfig

    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        names = list(f.keys())
        dtypes = {str(f.get_slice(n).get_dtype()) for n in names}
        # Every tensor is randomised (no all-zero biases or all-one norm weights left over).
        for n in names:
            t = f.get_tensor(n).float()
            assert t.numel() > 1 and float(t.std()) > 0.02, (n, float(t.std()))
    want = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[v["dtype"]]
    assert dtypes == {want}, dtypes
    head = [n for n in names if n in ("lm_head.weight", "embed_out.weight")]
    assert bool(head) != v["tie_word_embeddings"], names
    c = AutoConfig.from_pretrained(d)
    if "config" in v:
        _check_family_config(c, v)
        return
    assert any(n.endswith("q_proj.bias") for n in names) == v["attention_bias"], names
    rp = getattr(c, "rope_parameters", None) or {}
    if rp:
        assert rp.get("rope_theta") == v["rope_theta"], rp
        if v["rope_scaling"]:
            for k, val in v["rope_scaling"].items():
                assert rp.get(k) == val, (k, rp)
        else:
            assert rp.get("rope_type", "default") == "default", rp
    if v["model_type"] == "mistral":
        assert c.sliding_window is None
    assert c.head_dim == cfg["head_dim"]


def _check_family_config(c, v):
    """How transformers reads the classic keys of the other families (what the numpy forward assumes)."""
    k = v["config"]
    mt = v["model_type"]
    assert c.tie_word_embeddings == v["tie_word_embeddings"]
    rp = getattr(c, "rope_parameters", None) or {}
    if mt == "gpt2":
        assert c.activation_function == "gelu_new" and c.n_inner is None
    elif mt == "gpt_neox":
        assert rp["partial_rotary_factor"] == k["rotary_pct"], rp
        assert rp["rope_theta"] == k["rotary_emb_base"], rp
        assert c.attention_bias is True and c.hidden_act == "gelu"
    elif mt == "qwen2":
        assert c.sliding_window is None, c.sliding_window
        assert c.layer_types == ["full_attention"] * 2, c.layer_types
        assert rp["rope_theta"] == k["rope_theta"] and rp.get("rope_type", "default") == "default", rp
    elif mt == "phi3":
        assert c.sliding_window == k["sliding_window"], c.sliding_window
        assert rp.get("partial_rotary_factor", 1.0) == 1.0, rp
        assert rp.get("rope_type", "default") == "default", rp
    elif mt == "gemma":
        assert c.hidden_act == "gelu_pytorch_tanh", c.hidden_act
    elif mt == "gemma2":
        want = ["sliding_attention", "full_attention", "sliding_attention"]  # default pattern
        assert c.layer_types == want, c.layer_types
        assert c.hidden_activation == "gelu_pytorch_tanh"
    elif mt == "gemma3_text":
        assert c.layer_types == k["layer_types"], c.layer_types
        assert rp["full_attention"]["rope_theta"] == k["rope_theta"], rp
        assert rp["sliding_attention"]["rope_theta"] == k["rope_local_base_freq"], rp
        assert c.hidden_activation == "gelu_pytorch_tanh"
    elif mt == "olmo2":
        assert c.num_key_value_heads == k["num_key_value_heads"]
    else:
        raise AssertionError(mt)


def check_sensitive(d, v, ids_list):
    """Each listed config change moves the numpy log-probabilities by more than its threshold."""
    out = []
    base = [_log_softmax(numpy_logits_from_torch(d, ids)) for ids in ids_list]
    for what, overrides, threshold in v.get("sensitive", []):
        delta = max(
            float(np.abs(_log_softmax(numpy_logits_from_torch(d, ids, overrides)) - b).max())
            for ids, b in zip(ids_list, base)
        )
        assert delta > threshold, f"{v['name']}: {what} changes the log-probs by only {delta}"
        out.append((what, delta))
    return out


def greedy_margin(model, ids):
    """How far the greedy flags are from flipping: min |logit(next token) - best other logit|."""
    _, logits = log_probs(model, ids)
    logits = logits[:-1].astype(np.float64)
    nxt = np.asarray(ids[1:])
    rows = np.arange(len(nxt))
    target = logits[rows, nxt]
    logits[rows, nxt] = -np.inf
    return float(np.abs(target - logits.max(-1)).min())


def make_reference(d, v, tok):
    from transformers import AutoTokenizer

    model = load_f32(d)
    hf_tok = AutoTokenizer.from_pretrained(d)
    bos_id = hf_tok.bos_token_id
    assert bos_id == 0 and hf_tok.eos_token_id == 1
    prefix = bos_id if hf_tok.bos_token is not None else hf_tok.eos_token_id
    docs = [hf_tok.encode(t, add_special_tokens=False) for t in DOCUMENTS]
    for t, ids in zip(DOCUMENTS, docs):
        assert ids == tok.encode(t, add_special_tokens=False).ids
        assert hf_tok.decode(ids) == t, "tokenizer must round-trip the documents"
    maxpos = v["max_position_embeddings"]

    # The transformers numbers agree with a plain float64 forward pass of the saved files.
    info = {"numpy_err": 0.0}
    checked = (docs[1][:maxpos], ([bos_id] + docs[0])[:maxpos])
    for ids in checked:
        info["numpy_err"] = max(info["numpy_err"], check_numpy_forward(model, d, ids))
    info["sensitive"] = check_sensitive(d, v, checked)

    sequences = [
        score_sequence(model, docs[0][:maxpos]),
        score_sequence(model, docs[1][:maxpos]),
        score_sequence(model, ([bos_id] + docs[0])[:maxpos]),
    ]
    info["greedy_margin"] = min(greedy_margin(model, s["input_ids"]) for s in sequences)
    info["greedy_rate"] = float(np.mean([g for s in sequences for g in s["greedy"]]))

    windows = []
    for w in v.get("windows", WINDOWS):
        entry = dict(w)
        if w["mode"] == "rolling":
            entry["docs"] = [score_rolling(model, ids, prefix, w["ctx"]) for ids in docs]
            ll, linfo = lmeval_rolling(d, w["ctx"], DOCUMENTS)
            assert linfo["prefix"] == prefix and linfo["tokens"] == docs, "lm-eval tokenization"
            for i, (mine, theirs) in enumerate(zip(entry["docs"], ll)):
                check_close(mine["nll"], -theirs, f"{v['name']} rolling ctx={w['ctx']} doc {i}")
        elif w["mode"] == "sliding":
            entry["docs"] = [score_sliding(model, ids, w["ctx"], w["stride"]) for ids in docs]
        elif w["mode"] == "chunks":
            entry["docs"] = [
                score_chunks(model, ids, w["ctx"], bos_id, v["add_bos_token"]) for ids in docs
            ]
        windows.append(entry)

    ref = {"documents": DOCUMENTS, "sequences": sequences, "windows": windows}
    dump_json(ref, os.path.join(d, "reference.json"))
    return ref, [len(x) for x in docs], info


def main():
    """make_fixtures.py [OUT_DIR] [VARIANT ...]: all variants unless some are named."""
    here = os.path.dirname(os.path.abspath(__file__))
    names = {v["name"] for v in VARIANTS}
    args = sys.argv[1:]
    chosen = [a for a in args if a in names]
    rest = [a for a in args if a not in names]
    assert len(rest) <= 1, f"unknown arguments {rest[1:]} (variants: {sorted(names)})"
    out_root = rest[0] if rest else os.path.join(os.path.dirname(here), "tiny")
    os.makedirs(out_root, exist_ok=True)
    t0 = time.time()
    tok = build_tokenizer()
    print(f"tokenizer: vocab {tok.get_vocab_size()}")
    for v in VARIANTS:
        if chosen and v["name"] not in chosen:
            continue
        t1 = time.time()
        d = build_variant(v, tok, out_root)
        ref, ntok, info = make_reference(d, v, tok)
        r = {(w["mode"], w["ctx"]): w["docs"] for w in ref["windows"]}
        ppl = [math.exp(x["nll"] / x["tokens"]) for x in r[("rolling", 128)]]
        print(
            f"{v['name']}: doc tokens {ntok}, rolling-128 ppl "
            + ", ".join(f"{p:.3f}" for p in ppl)
            + f"; numpy vs transformers {info['numpy_err']:.2g}"
            + f"; greedy rate {info['greedy_rate']:.2f}, greedy margin {info['greedy_margin']:.2g}"
            + f" ({time.time() - t1:.1f}s)"
        )
        for what, delta in info["sensitive"]:
            print(f"    sensitive: {what}: max |d logprob| {delta:.3g}")
        if os.environ.get("MAKE_FIXTURES_DESCRIBE"):
            for line in describe(d):
                print("    " + line)
    print(f"lm-eval rolling vs own: max |difference| {MAX_DEV[0]:.3g} nats")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
