"""An independent float64 NumPy forward pass of the tiny checkpoints, read straight from config.json
(the classic keys of each family) and model.safetensors.

transformers has every family here and the fixtures' numbers come from it (reference_scoring.py);
this pass is not a second reference but the check of what transformers' numbers mean: that it
reads each family's classic config keys the way perplex does, and that the forward pass reads every
saved tensor. It is also the pass whose features make_fixtures.py switches off one at a time (the
"sensitive" entries) to show that a fixture really exercises them: a config override does not
always reach transformers' model (it maps Gemma's hidden_act "gelu" to the tanh GELU, and reads
rope keys into its own rope_parameters), and here each feature is one plain line of code.
"""
import json
import math
import os

import numpy as np

# torch (and transformers, through reference_scoring) are imported where they are used, so the
# forward pass itself runs with NumPy alone (make_compare_reference.py reads safetensors here).


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
    import torch
    from safetensors.torch import load_file

    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    return _UsedWeights({k: v.to(torch.float64).numpy() for k, v in tensors.items()})


_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}


def load_weights_f64_numpy(model_dir):
    """model.safetensors read with NumPy alone (F32, F16, BF16), every tensor widened to float64."""
    data = open(os.path.join(model_dir, "model.safetensors"), "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        raw = data[8 + n + start : 8 + n + end]
        if t["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, _SAFETENSORS_DTYPES[t["dtype"]])
        out[name] = a.astype(np.float64).reshape(t["shape"])
    return _UsedWeights(out)


def numpy_logits_from_torch(model_dir, ids, overrides=None, load=load_weights_f64):
    """Independent float64 numpy forward pass of a checkpoint, read straight from config.json (classic
    keys) and model.safetensors; checks what the transformers numbers mean. `overrides` replaces
    config keys (used to check that a feature such as soft-capping changes the result); `load`
    reads the tensors (through torch by default, or `load_weights_f64_numpy`)."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    cfg.update(overrides or {})
    w = load(model_dir)
    logits = _numpy_forward(cfg, w, ids)
    unused = set(w) - w.used
    assert not unused, f"{model_dir}: tensors the numpy forward did not read: {sorted(unused)}"
    return logits


def log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def check_numpy_forward(model, model_dir, ids, tol=2e-4):
    """transformers' float32 log-probabilities agree with the float64 numpy forward pass."""
    from reference_scoring import log_probs

    ref = log_softmax(numpy_logits_from_torch(model_dir, ids))
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
