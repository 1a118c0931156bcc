"""perplex as an lm-evaluation-harness backend: ``lm_eval --model perplex``.

::

    lm_eval --model perplex --model_args pretrained=models/default,batch_size=auto --tasks hellaswag

or, from Python, ``lm_eval.simple_evaluate(model=PerplexLM("models/default"), tasks=[...])``.

Model arguments:

``pretrained``
    a model directory, a ``.gguf`` file or a hub id in the local Hugging Face cache.
``revision``
    the hub id's branch, tag or commit.
``device``
    the adapter: its index in ``perplex devices`` or a substring of its name. lm-eval's own
    device names (``cuda``, ``cuda:0``, ``cpu``, ``mps``, the command line's default ``cuda:0``)
    name torch devices, not adapters, and leave the choice to perplex (the first adapter).
``ctx`` (or ``max_length``, as the ``hf`` backend calls it)
    the longest model input, for ``loglikelihood`` requests and ``loglikelihood_rolling``
    windows alike; default: the model's positions, as the ``hf`` backend's default.
``batch_size``
    windows per GPU pass, or ``auto``; the scores are the same for every batch size.
``rank``, ``world_size``
    this process's share of a data-parallel launch; default: ``RANK`` and ``WORLD_SIZE`` from
    the environment (as ``torchrun`` and ``accelerate launch`` set them), else one process. With
    several processes lm-eval gives each its share of the documents and gathers the results
    through ``torch.distributed`` (the ``gloo`` backend, set up from the launcher's environment),
    so only data-parallel runs need torch.

Each call hands all of its requests to the engine at once: requests that share a context (the
choices of a question) share one input, and the scores are those of ``perplex eval`` on the same
requests, bit for bit. ``generate_until`` requests are decoded greedily, many at once, and the
answers are those of ``perplex generate`` (``do_sample`` or a temperature above 0 is an error).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

# lm-eval fills its model registry from ``lm_eval.models`` only while the registry is empty;
# importing it first keeps every built-in backend available next to this one.
import lm_eval.models  # noqa: F401
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

import perplex

# Device names lm-eval and torch use, which do not name a GPU adapter for perplex.
_TORCH_DEVICE = re.compile(r"^(cuda|cpu|mps|xpu|hpu)(:\d+)?$")


@register_model("perplex")
class PerplexLM(LM):
    """An lm-evaluation-harness ``LM`` scoring with perplex (see the module documentation)."""

    def __init__(
        self,
        pretrained: str,
        revision: Optional[str] = None,
        device: Optional[str] = None,
        ctx: Optional[int] = None,
        max_length: Optional[int] = None,
        batch_size: Any = "auto",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,  # lm-eval's, for its own auto batch sizes; unused
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(
                f"perplex does not take the model argument(s) {', '.join(sorted(unknown))}; it takes pretrained, "
                "revision, device, ctx (or max_length), batch_size, rank and world_size"
            )
        if ctx is not None and max_length is not None and int(ctx) != int(max_length):
            raise ValueError(f"ctx={ctx} and max_length={max_length} disagree: give one of them")
        adapter = None if device is None or _TORCH_DEVICE.match(str(device)) else str(device)
        self.model = perplex.Model(pretrained, revision=revision, device=adapter, batch=_batch(batch_size))
        length = ctx if ctx is not None else max_length
        # The hf backend's default max_length is the model's positions, for rolling windows too
        # (perplex's own default window is at most 2048 tokens).
        self.max_length = int(length) if length is not None else self.model.max_positions
        self._rank = int(rank if rank is not None else os.environ.get("RANK", 0))
        self._world_size = int(world_size if world_size is not None else os.environ.get("WORLD_SIZE", 1))
        if not 0 <= self._rank < self._world_size:
            raise ValueError(f"rank={self._rank} must be between 0 and world_size - 1 = {self._world_size - 1}")
        # lm-eval puts the counts it gathers across ranks in tensors on this device.
        self._device = "cpu"

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[Dict[str, Any]] = None) -> "PerplexLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: Dict[str, Any], additional_config: Optional[Dict[str, Any]] = None) -> "PerplexLM":
        # lm-eval's command line always passes its own batch_size and device (defaults 1 and
        # cuda:0) beside --model_args; what --model_args says wins, where lm-eval would fail with
        # "got multiple values for keyword argument".
        defaults = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**defaults, **arg_dict})

    def _progress(self, disable_tqdm: bool) -> bool:
        return not disable_tqdm and self.rank == 0

    def loglikelihood(self, requests: List[Any], disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        pairs = [tuple(request.args) for request in requests]
        results = self.model.loglikelihood(pairs, ctx=self.max_length, progress=self._progress(disable_tqdm))
        for pair, result in zip(pairs, results):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def loglikelihood_rolling(self, requests: List[Any], disable_tqdm: bool = False) -> List[float]:
        texts = [request.args[0] for request in requests]
        results = self.model.loglikelihood_rolling(texts, ctx=self.max_length, progress=self._progress(disable_tqdm))
        for text, result in zip(texts, results):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
        return results

    def generate_until(self, requests: List[Any], disable_tqdm: bool = False) -> List[str]:
        arguments = [tuple(request.args) for request in requests]
        results = self.model.generate_until(arguments, ctx=self.max_length, progress=self._progress(disable_tqdm))
        for (context, kwargs), result in zip(arguments, results):
            self.cache_hook.add_partial("generate_until", (context, kwargs), result)
        return results

    # Data-parallel runs: lm-eval gives each rank its documents, then gathers counts, samples and
    # metrics through these. Only reached with world_size > 1, where torch is needed anyway
    # (lm-eval's evaluator makes the tensors it gathers).

    def all_gather(self, tensor: Any) -> Any:
        import torch

        gathered = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        _distributed().all_gather(gathered, tensor)
        return torch.stack(gathered)

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[List[Any]]:
        gathered = [None] * self.world_size if self.rank == dst else None
        _distributed().gather_object(obj, gathered, dst=dst)
        return gathered

    def barrier(self) -> None:
        _distributed().barrier()


def _batch(batch_size: Any) -> str:
    """perplex's batch from lm-eval's: ``auto`` and ``auto:N`` (lm-eval's re-tuning) are auto."""
    text = str(batch_size)
    return "auto" if text.startswith("auto") else text


def _distributed() -> Any:
    """torch.distributed, its process group set up from the launcher's environment."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist
