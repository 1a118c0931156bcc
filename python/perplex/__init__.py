"""perplex: score language-model checkpoints on any GPU (Vulkan, Metal, DX12) through wgpu.

The Python face of the perplex engine: the same checkpoints, request rules and numbers as the
``perplex`` command line, as Python values. ::

    import perplex

    model = perplex.Model("models/default")
    model.loglikelihood([("In the beginning God", " created the heaven")])
    model.perplexity(["And God said, Let there be light: and there was light."])
    ids, logprobs, greedy = model.token_logprobs("And the earth was without form, and void")
    model.generate_until([("And God called the light", {"until": ["."], "max_gen_toks": 32})])

``perplex.compare(base, model, texts)`` measures what a quantization or conversion cost: KL
divergence, same top token and Δp against the base model, as ``perplex compare`` does.

``perplex.lm_eval`` makes the engine an lm-evaluation-harness backend (``lm_eval --model perplex``).

Errors are exceptions carrying the command line's message: ``ValueError`` for bad input (a missing
or broken checkpoint, a context longer than the model takes, a request with nothing to score),
``MemoryError`` when the device runs out of memory, ``RuntimeError`` for failures of the engine or
the device. Ctrl-C stops a long call between passes with ``KeyboardInterrupt``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native

__all__ = ["Model", "TokenLogprobs", "compare"]

# A call's ``progress``: True for a progress bar, or a callable taking (tokens done, tokens in all).
ProgressArg = Union[bool, Callable[[int, int], None]]


class TokenLogprobs(NamedTuple):
    """Every scored token of a text, as NumPy arrays of one length.

    ``positions[i]`` is the token's place in the text's tokens (counted from 0), ``token_ids[i]``
    its id, ``logprobs[i]`` its log-probability in nats given the tokens before it, and
    ``greedy[i]`` whether it is the model's most likely next token there.
    """

    token_ids: np.ndarray
    logprobs: np.ndarray
    greedy: np.ndarray
    positions: np.ndarray


class Model:
    """A checkpoint loaded onto a GPU adapter, ready to score.

    Args:
        path_or_hub_id: a Hugging Face model directory (``config.json``, ``model.safetensors``,
            ``tokenizer.json``), a ``.gguf`` file, or a hub id (``org/name``) found in the local
            Hugging Face cache; perplex never downloads.
        revision: branch, tag or commit of a hub id (``step3000`` for Pythia's checkpoints).
        device: the adapter, as its index in ``perplex devices`` or a substring of its name;
            None picks the first.
        ctx: the longest model input: the maximum length of ``loglikelihood`` requests (None: the
            model's positions) and the window length of ``perplexity``, ``loglikelihood_rolling``
            and ``token_logprobs`` (None: the model's positions, at most 2048; 512 for chunks).
        batch: windows per GPU pass, or ``"auto"`` to fill each pass as the device allows. Scores
            are bit-identical for every batch size.
        sums: how matrix products are summed: ``"plain"`` f32 sums, or ``"compensated"`` ones that
            carry their rounding errors (about 2x slower, log-probabilities about 5x closer to
            float64), as ``perplex --sums``.
    """

    def __init__(
        self,
        path_or_hub_id: str,
        revision: Optional[str] = None,
        device: Union[int, str, None] = None,
        ctx: Optional[int] = None,
        batch: Union[int, str] = "auto",
        sums: str = "plain",
    ) -> None:
        self._native = _native.Model(
            str(path_or_hub_id),
            revision=revision,
            device=None if device is None else str(device),
            ctx=_positive("ctx", ctx),
            batch=str(batch),
            sums=sums,
        )

    @property
    def name(self) -> str:
        """What the model was opened from."""
        return self._native.name

    @property
    def adapter(self) -> str:
        """The GPU adapter the model runs on."""
        return self._native.adapter

    @property
    def max_positions(self) -> int:
        """The longest input the model takes (its ``max_position_embeddings``)."""
        return self._native.max_positions

    @property
    def ctx(self) -> Optional[int]:
        """The ``ctx`` the model was opened with (None: the command line's defaults)."""
        return self._native.ctx

    def __repr__(self) -> str:
        return f"perplex.Model({self.name!r}, adapter={self.adapter!r})"

    def loglikelihood(
        self, requests: Sequence[Tuple[str, str]], ctx: Optional[int] = None, progress: ProgressArg = False
    ) -> List[Tuple[float, bool]]:
        """Log-likelihood of each continuation given its context, as lm-evaluation-harness
        computes it (``perplex eval``'s rules).

        Trailing whitespace of the context moves to the continuation; context + continuation is
        tokenized as one string and split where the context's tokens end; an empty context is
        the BOS token (EOS without one); an input longer than ``ctx`` loses context on the left.
        Requests that share a context (the choices of a question) share one input. The results
        do not depend on the batch size or the order of the requests.

        Args:
            requests: ``(context, continuation)`` pairs.
            ctx: the longest model input; None: the model's ``ctx``.
            progress: ``True`` shows a progress bar; a callable is called with (tokens done,
                tokens in all) as the call goes.

        Returns:
            ``(log-likelihood in nats, whether every continuation token is the greedy choice)``
            for each request, in order.
        """
        pairs = [_pair(i, request) for i, request in enumerate(requests)]
        return self._native.loglikelihood(pairs, ctx=_positive("ctx", ctx), progress=_progress_bar(progress))

    def loglikelihood_rolling(
        self, texts: Sequence[str], ctx: Optional[int] = None, progress: ProgressArg = False
    ) -> List[float]:
        """Total log-likelihood (nats) of each text, every token scored once in rolling windows
        of ``ctx`` tokens (None: the model's ``ctx``): lm-evaluation-harness's
        ``loglikelihood_rolling``, the first token conditioned on BOS (EOS without one)."""
        return self._native.loglikelihood_rolling(
            _texts(texts), ctx=_positive("ctx", ctx), progress=_progress_bar(progress)
        )

    def generate_until(
        self,
        requests: Sequence[Tuple[str, Dict[str, Any]]],
        ctx: Optional[int] = None,
        progress: ProgressArg = False,
    ) -> List[str]:
        """Greedy continuations, as lm-evaluation-harness's HFLM ``generate_until`` makes them
        (``perplex generate``'s and ``perplex eval``'s rules).

        The context is tokenized without special tokens (BOS first for Gemma models, as HFLM
        does) and loses tokens on the left beyond ``ctx - max_gen_toks``; tokens are chosen
        greedily (ties to the lowest id) until the end-of-text token, ``max_gen_toks`` tokens,
        or one of the ``until`` strings in the decoded answer, which is cut before the first of
        them. The answers do not depend on the batch size or the order of the requests.

        Args:
            requests: ``(context, gen_kwargs)`` pairs, ``gen_kwargs`` as lm-eval task YAMLs
                give them: ``until`` (a string or a list of strings), ``max_gen_toks`` (default
                256); ``do_sample`` and ``temperature`` must ask for greedy decoding as HFLM
                reads them (``do_sample=False``, or no ``do_sample`` and ``temperature`` 0);
                ``top_p``, ``top_k`` and the like are unused, as HF ``generate`` ignores them
                when greedy.
            ctx: the longest model input, context and answer together; None: the model's
                ``ctx``, else its positions.
            progress: ``True`` shows a progress bar; a callable is called with (tokens done,
                tokens in all) as the call goes.

        Returns:
            The answer to each request, in order.
        """
        if isinstance(requests, tuple) and len(requests) == 2 and isinstance(requests[0], str):
            raise TypeError("requests must be a list of (context, gen_kwargs) pairs: wrap one request as [request]")
        native = [_generation_request(i, request) for i, request in enumerate(requests)]
        return self._native.generate_until(native, ctx=_positive("ctx", ctx), progress=_progress_bar(progress))

    def perplexity(
        self,
        texts: Sequence[str],
        window: str = "rolling",
        ctx: Optional[int] = None,
        stride: Optional[int] = None,
        progress: ProgressArg = False,
    ) -> Dict[str, Any]:
        """Loss, token/word/byte perplexity and bits per byte of the texts, each scored on its
        own, as ``perplex ppl --json`` reports them.

        Args:
            texts: the documents.
            window: ``"rolling"`` (lm-evaluation-harness ``loglikelihood_rolling``),
                ``"sliding"`` (the Hugging Face guide: windows advancing by ``stride``, default
                ctx / 2) or ``"chunks"`` (llama.cpp ``llama-perplexity``).
            ctx: window length; None: the model's ``ctx``.
            stride: tokens a sliding window advances.
            progress: ``True`` shows a progress bar; a callable is called with (tokens done,
                tokens in all) as the call goes.

        Returns:
            ``{"model", "adapter", "window", "ctx", "stride", "documents": [{"name", "nll",
            "tokens", "words", "bytes"}], "total": {"nll", "tokens", "words", "bytes",
            "token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"},
            "seconds", ...}``; documents are named by their index in ``texts``.
        """
        report = self._native.perplexity(
            _texts(texts), window, ctx=_positive("ctx", ctx), stride=stride, progress=_progress_bar(progress)
        )
        return json.loads(report)

    def token_logprobs(
        self,
        text: str,
        window: str = "rolling",
        ctx: Optional[int] = None,
        stride: Optional[int] = None,
        progress: ProgressArg = False,
    ) -> TokenLogprobs:
        """Per-token log-probabilities of one text, as NumPy arrays (``perplex ppl --per-token``).

        With the default rolling windows every token of the text is scored, the first one
        conditioned on BOS; sliding and chunks windows score the tokens their rules score, which
        ``positions`` lists.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        positions, ids, logprobs, greedy = self._native.token_logprobs(
            text, window, ctx=_positive("ctx", ctx), stride=stride, progress=_progress_bar(progress)
        )
        return TokenLogprobs(
            token_ids=np.asarray(ids, dtype=np.uint32),
            logprobs=np.asarray(logprobs, dtype=np.float32),
            greedy=np.asarray(greedy, dtype=bool),
            positions=np.asarray(positions, dtype=np.int64),
        )

    def tokenize(self, text: str) -> List[int]:
        """The text's token ids, without BOS or other special tokens."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return self._native.tokenize(text)


def compare(
    base: str,
    model: str,
    texts: Sequence[str],
    window: str = "rolling",
    ctx: Optional[int] = None,
    stride: Optional[int] = None,
    batch: str = "auto",
    device: Optional[str] = None,
    sums: str = "plain",
    swap: bool = False,
    revision: Optional[str] = None,
    per_token: bool = False,
    resume: Optional[Union[str, "os.PathLike[str]"]] = None,
    progress: ProgressArg = False,
) -> Dict[str, Any]:
    """``model`` against ``base`` on the same tokens, as ``perplex compare --json`` reports it:
    KL(base ‖ model) in nats, same top token and Δp (the change in the probability of the actual
    next token), with their uncertainties and percentiles, both perplexities and bits per byte,
    and the positions where the models disagree most. Both models' distributions are compared on
    the device; nothing per vocabulary entry is kept.

    Args:
        base, model: checkpoints as ``Model`` opens them (directories, ``.gguf`` files, hub ids
            in the local cache); their tokenizers must agree.
        texts: the documents.
        window, ctx, stride: as for ``Model.perplexity``; ctx defaults to the shorter model's.
        batch: windows per pass, or ``"auto"``; the numbers do not depend on it.
        device: the adapter, as for ``Model``.
        sums: ``"plain"`` or ``"compensated"`` (see ``Model``): for models that differ by less
            than f32 arithmetic resolves, such as an f32 checkpoint and its f16 export.
        swap: keep one model on the device at a time (same numbers; for pairs that do not fit
            together, which is also what happens by itself when they do not).
        revision: branch, tag or commit of ``model`` when it is a hub id.
        per_token: also return every scored position under ``"tokens"``.
        resume: a file to log every compared window to as it finishes; calling again with the
            same arguments after a crash or Ctrl-C continues where the call stopped, to the
            same numbers (``perplex compare --resume``).
        progress: ``True`` shows a progress bar; a callable is called with (tokens done,
            tokens in all).

    Returns:
        ``{"base", "model", "adapter", "window", "ctx", "residency", "statistics",
        "total_base", "total_model", "documents_base", "documents_model", "worst", "seconds",
        ...}``. ``statistics`` holds ``kld_mean``, ``same_top``, ``delta_p_mean``,
        ``delta_p_rms``, ``ppl_base``, ``ppl_model``, ``ppl_ratio``, ``ln_ppl_ratio``,
        ``ppl_difference`` (each ``{"value", "uncertainty"}``), ``kld`` and ``delta_p`` (``max``,
        ``median``, ``min`` and ``percentiles`` as ``[percent, value]`` pairs),
        ``logprob_correlation`` and ``count``; ``total_*`` hold each model's perplexities and
        bits per byte; ``worst`` the ten positions where the models disagree most, with their
        text. With ``per_token``, ``"tokens"``: NumPy arrays of one length, ``document`` (index
        in ``texts``), ``positions``, ``token_ids``, ``kld``, ``logprob_base``,
        ``logprob_model``, ``top_base``, ``top_model``.

    Raises:
        ValueError: a missing or broken checkpoint, tokenizers that differ (naming the first
            differing token), a window longer than either model takes.
        MemoryError: a model that does not fit on the device even alone.
    """
    report, tokens = _native.compare(
        base,
        model,
        _texts(texts),
        window,
        ctx=_positive("ctx", ctx),
        stride=stride,
        batch=batch,
        device=device,
        sums=sums,
        swap=bool(swap),
        revision=revision,
        per_token=bool(per_token),
        resume=None if resume is None else os.fspath(resume),
        progress=_progress_bar(progress),
    )
    result = json.loads(report)
    if tokens is not None:
        names = ["document", "positions", "token_ids", "kld", "logprob_base", "logprob_model", "top_base", "top_model"]
        dtypes = [np.int64, np.int64, np.uint32, np.float32, np.float32, np.float32, np.uint32, np.uint32]
        result["tokens"] = {name: np.asarray(column, dtype=dtype) for name, column, dtype in zip(names, tokens, dtypes)}
    return result


def _positive(name: str, value: Optional[int]) -> Optional[int]:
    # Rust would reject a negative number with an OverflowError; say what is wrong instead.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r}: give a positive number of tokens, or None for the default")
    return value


def _texts(texts: Sequence[str]) -> List[str]:
    # A lone string would otherwise be taken as a sequence of one-character documents.
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string: wrap it as [text]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, not {type(text).__name__}")
    return texts


def _pair(index: int, request: Any) -> Tuple[str, str]:
    if isinstance(request, (tuple, list)) and len(request) == 2 and all(isinstance(s, str) for s in request):
        return (request[0], request[1])
    raise TypeError(f"requests[{index}] must be a (context, continuation) pair of strings, not {request!r}")


# HFLM's default number of generated tokens.
DEFAULT_MAX_GEN_TOKS = 256


def _generation_request(index: int, request: Any) -> Tuple[str, List[str], int]:
    """A ``(context, gen_kwargs)`` pair as the engine takes it: ``(context, until, max_gen_toks)``."""
    if not (isinstance(request, (tuple, list)) and len(request) == 2 and isinstance(request[0], str)):
        raise TypeError(f"requests[{index}] must be a (context, gen_kwargs) pair, not {request!r}")
    context, kwargs = request
    kwargs = dict(kwargs or {})
    until = kwargs.pop("until", None)
    if until is None:
        until = []
    elif isinstance(until, str):
        until = [until]
    elif not (isinstance(until, (list, tuple)) and all(isinstance(u, str) for u in until)):
        raise ValueError(f"requests[{index}]: until must be a string or a list of strings, not {until!r}")
    max_gen_toks = kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
    if isinstance(max_gen_toks, bool) or not isinstance(max_gen_toks, int) or max_gen_toks < 1:
        raise ValueError(f"requests[{index}]: max_gen_toks={max_gen_toks!r}: give a positive number of tokens")
    # HFLM decodes greedily where do_sample is False, or unset with temperature 0 (its default);
    # otherwise it samples, which perplex does not do.
    do_sample, temperature = kwargs.pop("do_sample", None), kwargs.pop("temperature", 0.0)
    if do_sample or (do_sample is None and (temperature or 0.0) > 0.0):
        raise ValueError(
            f"requests[{index}] asks for sampling (do_sample={do_sample!r}, temperature={temperature!r}); "
            "perplex generates greedily only: use do_sample=False and temperature=0"
        )
    return context, list(until), max_gen_toks


def _progress_bar(progress: ProgressArg) -> Optional[Callable[[int, int], None]]:
    """The callback a call reports ``(tokens done, tokens in all)`` to, about 20 times a second:
    the caller's own, or one drawing a tqdm bar (a widget in notebooks) for ``True``."""
    if callable(progress):
        return progress
    if not progress:
        return None
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total == 0 or (bar is not None and bar.n >= bar.total):  # not counted yet, or over
            return
        if bar is None:
            bar = tqdm(total=total, unit="tok")
        if done > bar.n:
            bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
