"""The byte-level BPE tokenizer of the models perplex builds for its tests and trains itself
(make_fixtures.py, train_default.py): GPT-2's byte-level pre-tokenizer and decoder over a BPE
vocabulary trained with the `tokenizers` library."""


def train_byte_level_bpe(texts, vocab_size, special_tokens):
    """A byte-level BPE tokenizer of at most `vocab_size` tokens trained on the strings `texts`,
    with `special_tokens` first (ids 0, 1, ...). Deterministic: the same texts give the same file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
