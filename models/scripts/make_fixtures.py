#!/usr/bin/env python3
"""Build the tiny random Llama-family test checkpoints in models/tiny/ and their reference outputs.

    python models/scripts/make_fixtures.py [OUT_DIR]      (default: models/tiny)

Each variant directory gets config.json, model.safetensors, tokenizer.json, tokenizer_config.json and
reference.json. Everything is deterministic (fixed seeds) and computed in float32 on the CPU with
Hugging Face transformers; log-probabilities are taken with log_softmax in float64 from the float32
logits. The rolling-window numbers are cross-checked against lm-evaluation-harness (HFLM), and the
transformers outputs against an independent float64 numpy forward pass of the saved files.

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
  Documents are tokenized without special tokens.
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


def numpy_logits_from_torch(model_dir, ids):
    """Independent float64 numpy forward pass of a Llama/Mistral checkpoint, read straight from
    config.json (classic keys) and model.safetensors; checks what the transformers numbers mean."""
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = {k: v.to(torch.float64).numpy() for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
    return _numpy_forward(cfg, w, ids)


def check_numpy_forward(model, model_dir, ids, tol=2e-4):
    """transformers' float32 log-probabilities agree with the float64 numpy forward pass."""
    x = numpy_logits_from_torch(model_dir, ids)
    m = x.max(-1, keepdims=True)
    ref = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    lp, _ = log_probs(model, ids)
    err = float(np.abs(lp - ref).max())
    assert err < tol, f"{model_dir}: transformers vs numpy forward differ by {err}"
    return err


def _rope_inv_freq(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    rs = cfg.get("rope_scaling")
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


def _numpy_forward(cfg, w, ids):
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    n = len(ids)

    def norm(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        b = w.get(name + ".bias")
        return y if b is None else y + b

    inv = _rope_inv_freq(cfg, hd)
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # x: [heads, n, hd], halves rotated (Hugging Face layout)
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    h = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = norm(h, w[p + "input_layernorm.weight"])
        q = lin(x, p + "self_attn.q_proj").reshape(n, nh, hd).transpose(1, 0, 2)
        k = lin(x, p + "self_attn.k_proj").reshape(n, nkv, hd).transpose(1, 0, 2)
        v = lin(x, p + "self_attn.v_proj").reshape(n, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        rep = nh // nkv
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, nh * hd)
        h = h + lin(o, p + "self_attn.o_proj")
        x = norm(h, w[p + "post_attention_layernorm.weight"])
        g = lin(x, p + "mlp.gate_proj")
        h = h + lin(g / (1 + np.exp(-g)) * lin(x, p + "mlp.up_proj"), p + "mlp.down_proj")
    h = norm(h, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return h @ head.T


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

INITIALIZER_RANGE = 0.2

WINDOWS = [
    {"mode": "rolling", "ctx": 16},
    {"mode": "rolling", "ctx": 128},
    {"mode": "sliding", "ctx": 24, "stride": 10},
    {"mode": "chunks", "ctx": 20},
]


def config_json(v, vocab_size):
    """config.json in the classic Hugging Face layout (rope_theta / rope_scaling keys)."""
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


def randomize(model, seed):
    """Deterministic weights: N(0, INITIALIZER_RANGE) matrices, 1 + 0.1 N(0,1) norms, 0.1 N(0,1) biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                assert p.dim() == 2, name
                p.copy_(INITIALIZER_RANGE * noise)


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
    randomize(model, v["seed"])
    if v["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model = model.to(getattr(torch, v["dtype"]))
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
    return d


def check_saved(d, v, cfg):
    """The saved files hold what was asked for: dtypes, tensor names, tie, rope parameters."""
    from safetensors import safe_open
    from transformers import AutoConfig

    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        names = list(f.keys())
        dtypes = {str(f.get_slice(n).get_dtype()) for n in names}
    want = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[v["dtype"]]
    assert dtypes == {want}, dtypes
    assert ("lm_head.weight" in names) != v["tie_word_embeddings"], names
    assert any(n.endswith("q_proj.bias") for n in names) == v["attention_bias"], names
    c = AutoConfig.from_pretrained(d)
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
    for ids in (docs[1][:maxpos], ([bos_id] + docs[0])[:maxpos]):
        check_numpy_forward(model, d, ids)

    sequences = [
        score_sequence(model, docs[0][:maxpos]),
        score_sequence(model, docs[1][:maxpos]),
        score_sequence(model, ([bos_id] + docs[0])[:maxpos]),
    ]

    windows = []
    for w in WINDOWS:
        entry = dict(w)
        if w["mode"] == "rolling":
            entry["docs"] = [score_rolling(model, ids, prefix, w["ctx"]) for ids in docs]
            ll, info = lmeval_rolling(d, w["ctx"], DOCUMENTS)
            assert info["prefix"] == prefix and info["tokens"] == docs, "lm-eval tokenization"
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
    return ref, [len(x) for x in docs]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(here), "tiny")
    os.makedirs(out_root, exist_ok=True)
    t0 = time.time()
    tok = build_tokenizer()
    print(f"tokenizer: vocab {tok.get_vocab_size()}")
    for v in VARIANTS:
        t1 = time.time()
        d = build_variant(v, tok, out_root)
        ref, ntok = make_reference(d, v, tok)
        r = {(w["mode"], w["ctx"]): w["docs"] for w in ref["windows"]}
        ppl = [math.exp(x["nll"] / x["tokens"]) for x in r[("rolling", 128)]]
        print(
            f"{v['name']}: doc tokens {ntok}, rolling-128 ppl "
            + ", ".join(f"{p:.3f}" for p in ppl)
            + f" ({time.time() - t1:.1f}s)"
        )
    print(f"lm-eval rolling vs own: max |difference| {MAX_DEV[0]:.3g} nats")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
