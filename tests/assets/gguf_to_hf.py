"""Dequantize a GGUF checkpoint (llama or qwen2 architecture) into a Hugging Face directory.

    python gguf_to_hf.py MODEL.gguf OUT_DIR [f32|f16]

Writes config.json, model.safetensors, tokenizer.json and tokenizer_config.json, using only the
`gguf`, `numpy`, `safetensors` and `tokenizers` packages (no torch). The weights are exactly the
GGUF's, dequantized and stored at the width asked for, so perplex's scores of the GGUF file and of
the directory differ only by that rounding.
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
from tokenizers import pre_tokenizers as pre

# GGUF tensor names -> Hugging Face names: whole-model tensors, then per-block suffixes.
MODEL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
WIDTHS = {"f32": (np.float32, "float32"), "f16": (np.float16, "float16")}

# Qwen2's pre-tokenizer pattern, as its tokenizer.json on the hub has it.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GGUF_USER_DEFINED_TOKEN = 3  # llama.cpp's token type for added special tokens


def undo_rope_permutation(weight, heads):
    """llama.cpp's converter reorders each llama q/k head's rows from HF's rotate-half layout
    into interleaved pairs; this puts them back."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def main(gguf_path, out_dir, width="f32"):
    dtype, torch_dtype = WIDTHS[width]
    reader = GGUFReader(gguf_path)

    def field(key):
        value = reader.fields.get(key)
        return None if value is None else value.contents()

    arch = field("general.architecture")
    if arch not in ARCHITECTURES:
        sys.exit(f"gguf_to_hf: architecture {arch!r} is not one of {sorted(ARCHITECTURES)}")

    def hparam(key):
        return field(f"{arch}.{key}")

    heads, kv_heads = hparam("attention.head_count"), hparam("attention.head_count_kv")
    tensors = {}
    for tensor in reader.tensors:
        # GGUF lists dimensions innermost first; numpy wants them outermost first.
        shape = [int(d) for d in reversed(tensor.shape)]
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)
        if tensor.name in MODEL_TENSORS:
            name = MODEL_TENSORS[tensor.name]
        else:
            _, layer, rest = tensor.name.split(".", 2)
            base, suffix = rest.rsplit(".", 1)
            name = f"model.layers.{layer}.{BLOCK_TENSORS[base]}.{suffix}"
            if arch == "llama" and suffix == "weight" and base in ("attn_q", "attn_k"):
                weight = undo_rope_permutation(weight, heads if base == "attn_q" else kv_heads)
        tensors[name] = np.ascontiguousarray(weight.astype(dtype))

    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    config = {
        "architectures": [ARCHITECTURES[arch]],
        "model_type": arch,
        "hidden_size": hparam("embedding_length"),
        "intermediate_size": hparam("feed_forward_length"),
        "num_hidden_layers": hparam("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": hparam("attention.layer_norm_rms_epsilon"),
        "rope_theta": hparam("rope.freq_base"),
        "max_position_embeddings": hparam("context_length"),
        "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
        "hidden_act": "silu",
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": field("tokenizer.ggml.bos_token_id"),
        "eos_token_id": field("tokenizer.ggml.eos_token_id"),
        "torch_dtype": torch_dtype,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)

    write_tokenizer(field, config, out_dir)
    print(json.dumps(config), len(tensors))


def write_tokenizer(field, config, out_dir):
    """tokenizer.json rebuilt from the GGUF's vocabulary and merges (byte-level BPE)."""
    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    merges = [tuple(merge.split(" ", 1)) for merge in field("tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE({token: i for i, token in enumerate(tokens)}, merges, fuse_unk=False))
    style = field("tokenizer.ggml.pre")
    if style == "smollm":
        # llama.cpp's smollm pre-tokenizer: single digits, then the GPT-2 pattern.
        tokenizer.pre_tokenizer = pre.Sequence(
            [pre.Digits(individual_digits=True), pre.ByteLevel(add_prefix_space=False, use_regex=True)]
        )
    elif style == "qwen2":
        tokenizer.pre_tokenizer = pre.Sequence(
            [pre.Split(Regex(QWEN2_SPLIT), behavior="isolated"), pre.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    else:
        tokenizer.pre_tokenizer = pre.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, kind in enumerate(types) if kind == GGUF_USER_DEFINED_TOKEN]
    )
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    special = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[config["bos_token_id"]],
        "eos_token": tokens[config["eos_token_id"]],
        "add_bos_token": bool(field("tokenizer.ggml.add_bos_token")),
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(special, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
