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

The scoring itself (log-probabilities, the rolling / sliding / chunks windows, lm-evaluation-harness)
is reference_scoring.py, shared with make_smollm2_reference.py and make_gguf_scores.py; the float64
numpy forward pass is numpy_forward.py.

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
import math
import os
import sys
import time

# First: reference_scoring sets the offline, single-thread environment before numpy and torch load.
from reference_scoring import (
    MAX_DEV,
    check_close,
    dump_json,
    lmeval_rolling,
    load_f32,
    log_probs,
    score_chunks,
    score_rolling,
    score_sequence,
    score_sliding,
)
from numpy_forward import check_numpy_forward, log_softmax, numpy_logits_from_torch  # noqa: E402
from byte_level_bpe import train_byte_level_bpe  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

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
# Tokenizer
# ---------------------------------------------------------------------------------------------

BOS, EOS = "<s>", "</s>"
TOKENIZER_VOCAB = 360


def build_tokenizer():
    tok = train_byte_level_bpe(TRAIN_TEXT, TOKENIZER_VOCAB, [BOS, EOS])
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    return tok


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------

def llama_layout(**variant):
    """A variant of the Llama layout (LlamaForCausalLM, MistralForCausalLM): the settings the four
    share unless `variant` says otherwise."""
    shared = dict(
        extra_vocab=0,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rope_scaling=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        add_bos_token=False,
    )
    return {**shared, **variant}


VARIANTS = [
    llama_layout(
        name="llama-f32", arch="LlamaForCausalLM", model_type="llama", seed=1001, extra_vocab=3,
        hidden_size=72, num_attention_heads=6, num_key_value_heads=2, intermediate_size=100,
        num_hidden_layers=2, dtype="float32", add_bos_token=True,
    ),
    llama_layout(
        name="llama-tied-f16", arch="LlamaForCausalLM", model_type="llama", seed=1002,
        hidden_size=80, num_attention_heads=5, num_key_value_heads=5, intermediate_size=136,
        num_hidden_layers=3, tie_word_embeddings=True, dtype="float16",
    ),
    llama_layout(
        name="llama3-bf16", arch="LlamaForCausalLM", model_type="llama", seed=1003, extra_vocab=3,
        hidden_size=64, num_attention_heads=4, num_key_value_heads=1, intermediate_size=90,
        num_hidden_layers=2, max_position_embeddings=256, rope_theta=500000.0,
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
        attention_bias=True, dtype="bfloat16",
    ),
    llama_layout(
        name="mistral-f32", arch="MistralForCausalLM", model_type="mistral", seed=1004,
        hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
        intermediate_size=70, num_hidden_layers=2, sliding_window=None, dtype="float32",
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

def family_variant(name, arch, model_type, seed, extra_vocab, dtype, tie_word_embeddings, config,
                   add_bos_token=False, init=None, sensitive=None):
    """A variant of another family: the family's own config.json keys (`config`, to which the
    variant's tie_word_embeddings is added last) and what these variants share: 128 positions and
    only the two rolling windows."""
    v = dict(
        name=name,
        arch=arch,
        model_type=model_type,
        seed=seed,
        extra_vocab=extra_vocab,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        dtype=dtype,
        add_bos_token=add_bos_token,
        windows=SHORT_WINDOWS,
    )
    if init is not None:
        v["init"] = init
    v["config"] = {**config, "tie_word_embeddings": tie_word_embeddings}
    if sensitive is not None:
        v["sensitive"] = sensitive
    return v


def sizes(hidden, intermediate, layers, heads, kv_heads):
    """The leading size keys of a Llama-style config.json (Qwen2, Phi-3, Gemma, OLMo 2)."""
    return {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
    }


def llama_like(hidden, intermediate, layers, heads, kv_heads, rms_norm_eps, rope_theta):
    """The keys a Llama-like config.json (Qwen2, OLMo 2) begins with: the sizes, SiLU, 128
    positions, the RMSNorm epsilon and RoPE without scaling."""
    return {
        **sizes(hidden, intermediate, layers, heads, kv_heads),
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "rms_norm_eps": rms_norm_eps,
        "rope_theta": rope_theta,
        "rope_scaling": None,
    }


def gpt_neox_config(rotary_pct, use_parallel_residual):
    """The config.json keys of the two GPT-NeoX variants, which differ in the rotary share and the
    residual."""
    return {
        "hidden_size": 48,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 100,
        "hidden_act": "gelu",
        "rotary_pct": rotary_pct,
        "rotary_emb_base": 10000,
        "use_parallel_residual": use_parallel_residual,
        "max_position_embeddings": 128,
        "layer_norm_eps": 1e-5,
    }


VARIANTS += [
    family_variant(
        name="gpt2-f32", arch="GPT2LMHeadModel", model_type="gpt2", seed=1005,
        extra_vocab=1, dtype="float32", tie_word_embeddings=True,
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
        },
        sensitive=[("exact-erf GELU instead of gelu_new", {"activation_function": "gelu_erf"}, 1e-3)],
    ),
    family_variant(
        name="gpt-neox-f16", arch="GPTNeoXForCausalLM", model_type="gpt_neox", seed=1006,
        extra_vocab=8, dtype="float16", tie_word_embeddings=False,
        config=gpt_neox_config(rotary_pct=0.5, use_parallel_residual=True),
        sensitive=[
            ("sequential residual", {"use_parallel_residual": False}, 1e-2),
            ("full rotary", {"rotary_pct": 1.0}, 1e-2),
            ("tanh GELU instead of exact", {"hidden_act": "gelu_new"}, 1e-3),
        ],
    ),
    family_variant(
        name="gpt-neox-seq-f32", arch="GPTNeoXForCausalLM", model_type="gpt_neox", seed=1007,
        extra_vocab=0, dtype="float32", tie_word_embeddings=False,
        config=gpt_neox_config(rotary_pct=1.0, use_parallel_residual=False),
        sensitive=[("parallel residual", {"use_parallel_residual": True}, 1e-2)],
    ),
    family_variant(
        name="qwen2-bf16", arch="Qwen2ForCausalLM", model_type="qwen2", seed=1008,
        extra_vocab=4, dtype="bfloat16", tie_word_embeddings=True,
        config={
            **llama_like(hidden=64, intermediate=90, layers=2, heads=4, kv_heads=2,
                         rms_norm_eps=1e-6, rope_theta=1000000.0),
            # As in the Qwen2.5 configs: a sliding_window value that is switched off.
            "use_sliding_window": False,
            "sliding_window": 16,
            "max_window_layers": 1,
            "attention_dropout": 0.0,
        },
        sensitive=[
            (
                "sliding_window 16 applied despite use_sliding_window false",
                {"use_sliding_window": True, "max_window_layers": 0},
                1e-2,
            ),
        ],
    ),
    family_variant(
        name="phi3-f32", arch="Phi3ForCausalLM", model_type="phi3", seed=1009,
        extra_vocab=2, dtype="float32", tie_word_embeddings=False,
        config={
            **sizes(hidden=48, intermediate=70, layers=2, heads=4, kv_heads=2),
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
        },
        sensitive=[("sliding window 127", {"sliding_window": 127}, 1e-2)],
    ),
    family_variant(
        name="gemma-f32", arch="GemmaForCausalLM", model_type="gemma", seed=1010,
        extra_vocab=0, dtype="float32", tie_word_embeddings=True, add_bos_token=True,
        config={
            **sizes(hidden=64, intermediate=90, layers=2, heads=4, kv_heads=1),
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
        },
        sensitive=[("exact-erf GELU", {"hidden_act": "gelu_erf"}, 1e-3)],
    ),
    family_variant(
        name="gemma2-f32", arch="Gemma2ForCausalLM", model_type="gemma2", seed=1011,
        extra_vocab=1, dtype="float32", tie_word_embeddings=True, add_bos_token=True,
        # Larger attention scores and logits, so that both soft-caps bite (each moves the log-probs
        # by ~0.9 nats somewhere; see "sensitive").
        init={"std": {r"\.(q|k)_proj\.weight$": 0.4}, "norm_centre": {r"^model\.norm\.weight$": 0.5}},
        config={
            **sizes(hidden=48, intermediate=70, layers=3, heads=4, kv_heads=2),
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
        },
        sensitive=[
            ("no attention soft-cap", {"attn_logit_softcapping": None}, 0.1),
            ("no final soft-cap", {"final_logit_softcapping": None}, 0.1),
            ("no sliding window", {"sliding_window": None}, 1e-2),
            ("sliding window 9", {"sliding_window": 9}, 1e-3),
            ("scale 1/sqrt(head_dim)", {"query_pre_attn_scalar": 16}, 1e-2),
        ],
    ),
    family_variant(
        name="gemma3-f32", arch="Gemma3ForCausalLM", model_type="gemma3_text", seed=1012,
        extra_vocab=3, dtype="float32", tie_word_embeddings=True, add_bos_token=True,
        config={
            **sizes(hidden=48, intermediate=70, layers=3, heads=4, kv_heads=2),
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
        },
        sensitive=[
            ("no sliding window", {"sliding_window": None}, 1e-2),
            ("global rope base on every layer", {"rope_local_base_freq": 1000000.0}, 1e-2),
            ("local rope base on every layer", {"rope_theta": 10000.0}, 1e-2),
            ("all layers sliding", {"layer_types": ["sliding_attention"] * 3}, 1e-2),
        ],
    ),
    family_variant(
        name="olmo2-f32", arch="Olmo2ForCausalLM", model_type="olmo2", seed=1013,
        extra_vocab=2, dtype="float32", tie_word_embeddings=False,
        config={
            # Olmo2Config allows grouped-query attention (OLMo-2 32B uses it); k_norm is then
            # num_key_value_heads * head_dim wide, narrower than q_norm.
            **llama_like(hidden=48, intermediate=70, layers=2, heads=4, kv_heads=2,
                         rms_norm_eps=1e-6, rope_theta=500000.0),
            "attention_bias": False,
            "attention_dropout": 0.0,
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
    base = [log_softmax(numpy_logits_from_torch(d, ids)) for ids in ids_list]
    for what, overrides, threshold in v.get("sensitive", []):
        delta = max(
            float(np.abs(log_softmax(numpy_logits_from_torch(d, ids, overrides)) - b).max())
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
