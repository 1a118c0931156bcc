# The compiled module (python/src/lib.rs). perplex.Model wraps it and documents the API.
from typing import Callable, List, Optional, Tuple

Progress = Optional[Callable[[int, int], None]]

class Model:
    def __init__(
        self,
        path_or_hub_id: str,
        revision: Optional[str] = None,
        device: Optional[str] = None,
        ctx: Optional[int] = None,
        batch: str = "auto",
        sums: str = "plain",
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def adapter(self) -> str: ...
    @property
    def max_positions(self) -> int: ...
    @property
    def ctx(self) -> Optional[int]: ...
    def loglikelihood(
        self, requests: List[Tuple[str, str]], ctx: Optional[int] = None, progress: Progress = None
    ) -> List[Tuple[float, bool]]: ...
    def loglikelihood_rolling(
        self, texts: List[str], ctx: Optional[int] = None, progress: Progress = None
    ) -> List[float]: ...
    def perplexity(
        self,
        texts: List[str],
        window: str,
        ctx: Optional[int] = None,
        stride: Optional[int] = None,
        progress: Progress = None,
    ) -> str: ...
    def token_logprobs(
        self,
        text: str,
        window: str,
        ctx: Optional[int] = None,
        stride: Optional[int] = None,
        progress: Progress = None,
    ) -> Tuple[List[int], List[int], List[float], List[bool]]: ...
    def generate_until(
        self, requests: List[Tuple[str, List[str], int]], ctx: Optional[int] = None, progress: Progress = None
    ) -> List[str]: ...
    def tokenize(self, text: str) -> List[int]: ...

def compare(
    base: str,
    model: str,
    texts: List[str],
    window: str = "rolling",
    ctx: Optional[int] = None,
    stride: Optional[int] = None,
    batch: str = "auto",
    device: Optional[str] = None,
    sums: str = "plain",
    swap: bool = False,
    revision: Optional[str] = None,
    per_token: bool = False,
    resume: Optional[str] = None,
    progress: Progress = None,
) -> Tuple[
    str,
    Optional[Tuple[List[int], List[int], List[int], List[float], List[float], List[float], List[int], List[int]]],
]: ...
