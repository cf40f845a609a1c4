"""The engine protocol the manager drives, its data types and its typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class LoadSpec:
    """Everything an engine needs to load one model, already fitted to the device."""

    model_id: str
    path: str
    max_model_len: int = 2048
    memory_utilization: float = 0.1
    quantization: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    # True: no compilation and no CUDA graphs (a faster load, a slower decode). None: the
    # engine's default for the device (core.engine.vllm_engine.engine_enforce_eager).
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    max_num_seqs: int | None = None
    # Tokens the KV cache must hold (vLLM's CPU build: sized to the fitted context instead of a
    # share of host memory). None: the engine's own sizing.
    kv_cache_tokens: int | None = None


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """A chat request. The engine applies the model's chat template."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    request_id: str = ""
    # enable_thinking for the chat template; None leaves the template's own default (Qwen3
    # hybrids think, thinking-2507 models always think, instruct models never do).
    thinking: bool | None = False
    ignore_eos: bool = False  # keep generating past end-of-sequence (benchmarks: fixed length)
    stop: tuple[str, ...] = ()  # stop sequences (not included in the output)
    top_k: int = 0  # 0: every token is considered
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class GenerationDelta:
    """One streamed piece of output. Token counts and timings are cumulative for the request."""

    text: str = ""
    thinking: str = ""
    tokens: int = 0
    elapsed_s: float = 0.0
    first_token_s: float | None = None
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # the rendered prompt's length, when the engine knows it

    @property
    def tokens_per_s(self) -> float | None:
        if self.first_token_s is None or self.tokens < 2:
            return None
        decode = self.elapsed_s - self.first_token_s
        return (self.tokens - 1) / decode if decode > 0 else None

# How a load started its engine processes, which decides most of a load's time on vLLM's CPU
# build: "spawned" (fresh processes import torch and vLLM), "forked" (from the engine forkserver,
# imports done), "forked_after_wait" (forked once the forkserver, still importing, was ready).
# An engine that reports it has an `engine_start` attribute after load(); the switch history
# keeps it so the ETA compares like with like.
ENGINE_STARTS = ("spawned", "forked", "forked_after_wait")


@dataclass(frozen=True)
class EngineInfo:
    model_id: str
    kind: str  # "vllm" or "remote"
    max_model_len: int | None = None
    pids: tuple[int, ...] = field(default_factory=tuple)


@runtime_checkable
class Engine(Protocol):
    """One loaded model. load() once, generate() many times, shutdown() once."""

    async def load(self, spec: LoadSpec) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    async def shutdown(self) -> None: ...

    def is_healthy(self) -> bool: ...

    def pids(self) -> tuple[int, ...]: ...


class EngineError(RuntimeError):
    """Base of every engine failure; str() is one sentence a person can act on."""


class ModelDirectoryError(EngineError):
    def __init__(self, path: str, missing: str) -> None:
        self.path = path
        self.missing = missing
        super().__init__(f"Model directory {path} cannot be used: {missing}.")


class UnsupportedModelError(EngineError):
    pass


class InsufficientMemoryError(EngineError):
    """Free device memory is below what the requested utilization needs."""

    def __init__(self, free_gib: float | None, total_gib: float | None, requested: float | None,
                 detail: str = "") -> None:
        self.free_gib = free_gib
        self.total_gib = total_gib
        self.requested = requested
        msg = "Not enough free memory to load the model"
        if free_gib is not None and total_gib is not None:
            msg += f": {free_gib:.2f} of {total_gib:.2f} GiB free"
        if requested is not None:
            msg += f", {requested:.2f} of it requested"
        super().__init__(msg + (f" ({detail})" if detail else "") + ".")


class NoCacheMemoryError(EngineError):
    def __init__(self) -> None:
        super().__init__("The weights loaded but no memory is left for the KV cache; "
                         "raise the memory utilization or pick a smaller model.")


class ContextTooLongError(EngineError):
    """The requested context does not fit; max_fitting is what vLLM says would."""

    def __init__(self, requested: int | None, max_fitting: int | None) -> None:
        self.requested = requested
        self.max_fitting = max_fitting
        super().__init__(f"A context of {requested} tokens does not fit in the KV cache; "
                         f"at most {max_fitting} would.")


class PromptTooLongError(EngineError):
    def __init__(self, prompt_tokens: int, max_model_len: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len
        super().__init__(f"The prompt has {prompt_tokens} tokens but the loaded context holds "
                         f"{max_model_len}.")


class EngineDiedError(EngineError):
    pass


class EngineTimeoutError(EngineError):
    pass


class RemoteError(EngineError):
    pass


class RemoteUnreachableError(RemoteError):
    pass


class RemoteAuthError(RemoteError):
    pass


class RemoteStreamError(RemoteError):
    pass


class RemoteModelNotServedError(RemoteError):
    """The server answers but does not list the configured model."""
