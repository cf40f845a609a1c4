"""An engine on an OpenAI-compatible server (a vLLM server elsewhere, or a cloud API).

Talks to it with the official `openai` async client: its SSE parsing, status errors and
connection handling. Every wait is bounded: connect and read timeouts, a few retries when the
connection cannot be made (the HTTP transport's own, so a request that reached the server is
never sent twice). The API key comes only from an environment variable or the system keyring,
is read per request, and is never logged, stored or put in an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.engine.base import (
    EngineInfo,
    GenerationDelta,
    GenerationRequest,
    LoadSpec,
    RemoteAuthError,
    RemoteError,
    RemoteModelNotServedError,
    RemoteStreamError,
    RemoteUnreachableError,
)
from core.engine.thinking import ThinkingSplitter

if TYPE_CHECKING:
    # The SDK is imported by the engine's methods, on first use: it takes ~0.5-1.5 s, and
    # RemoteConfig (this module) is on the desktop app's launch path.
    import openai
    from openai.types.chat import ChatCompletionChunk


class RemoteConfig(BaseModel):
    """Where the remote server is and how to reach it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="e.g. http://gpu-box:8000/v1")
    model: str = Field(description="the served model name")
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    keyring_service: str | None = Field(
        default=None, description="system keyring service holding the key (user = model)")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    connect_retries: int = Field(default=2, ge=0)
    send_chat_template_kwargs: bool = Field(
        default=True, description="send vLLM's chat_template_kwargs (enable_thinking)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.rstrip("/"))
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s)://host[:port]/path URL, got {value!r}")
        return value


def resolve_api_key(config: RemoteConfig) -> str | None:
    """The API key from the environment variable, else the keyring (if installed), else None."""
    if config.api_key_env:
        value = os.environ.get(config.api_key_env)
        if value:
            return value
    if config.keyring_service:
        try:
            import keyring
        except ImportError:
            return None
        try:
            secret = keyring.get_password(config.keyring_service, config.model)
        except Exception:  # noqa: BLE001 - any keyring backend failure means "no key"
            return None
        return str(secret) if secret else None
    return None


# The keyring service the settings dialog stores the key under (the user name is the model).
KEYRING_SERVICE = "vrampilot"


def keyring_problem() -> str | None:
    """Why the system keyring cannot hold an API key here, or None when it can."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return "the keyring package is not installed"
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - a broken backend is reported, not raised
        return f"the system keyring failed ({exc})"
    if isinstance(backend, fail.Keyring):
        return "no system keyring is running"
    return None


def store_api_key(config: RemoteConfig, key: str) -> None:
    """Keep the key in the system keyring where resolve_api_key reads it (never in a file)."""
    import keyring

    keyring.set_password(config.keyring_service or KEYRING_SERVICE, config.model, key)


def _served_models(body: bytes) -> list[str] | None:
    """The model ids of an OpenAI /models answer; None when the answer is not such a list."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


class RemoteEngine:
    """Implements core.engine.base.Engine against an OpenAI-compatible HTTP server."""

    def __init__(self, config: RemoteConfig) -> None:
        parts = urlsplit(config.base_url.rstrip("/"))  # checked by RemoteConfig
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._config = config
        self._where = f"{parts.scheme}://{parts.hostname}:{port}{parts.path}"
        self._spec: LoadSpec | None = None
        self._healthy = False
        # One client per event loop: its pooled connections belong to the loop that made them.
        self._client: openai.AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._open: dict[str, openai.AsyncStream[ChatCompletionChunk]] = {}
        self._aborted: set[str] = set()

    @property
    def config(self) -> RemoteConfig:
        return self._config

    # -- protocol ------------------------------------------------------------------------------

    async def load(self, spec: LoadSpec) -> None:
        """Check the server answers, accepts the key and serves the model, by listing its
        models."""
        import openai

        try:
            raw = await self._openai().models.with_raw_response.list(
                extra_headers=self._auth_headers())
        except openai.APIError as exc:
            raise self._error(exc) from exc
        served = _served_models(raw.http_response.content)
        if served is not None and self._config.model not in served:
            raise RemoteModelNotServedError(
                f"The remote server {self._where} does not serve {self._config.model!r} "
                f"(it serves: {', '.join(served) or 'nothing'}).")
        self._spec = spec
        self._healthy = True

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        return self._generate(request)

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)
        stream = self._open.get(request_id)
        if stream is not None:
            await stream.close()  # a read waiting on it ends with a connection error

    async def shutdown(self) -> None:
        for stream in list(self._open.values()):
            await stream.close()
        self._open.clear()
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.close()
        self._healthy = False
        self._spec = None

    def is_healthy(self) -> bool:
        return self._healthy

    def pids(self) -> tuple[int, ...]:
        return ()

    def info(self) -> EngineInfo:
        return EngineInfo(model_id=self._spec.model_id if self._spec else self._config.model,
                          kind="remote",
                          max_model_len=self._spec.max_model_len if self._spec else None)

    # -- client --------------------------------------------------------------------------------

    def _openai(self) -> openai.AsyncOpenAI:
        import httpx2
        import openai

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            cfg = self._config
            timeout = openai.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s)
            # The transport retries only a connection that could not be made; the SDK's own
            # retries (off) would also repeat timed-out and 5xx requests.
            http = openai.DefaultAsyncHttpxClient(
                transport=httpx2.AsyncHTTPTransport(retries=cfg.connect_retries),
                timeout=timeout)
            # The key is sent per request (_auth_headers), never held by the client.
            self._client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key="unused",
                                              max_retries=0, timeout=timeout, http_client=http)
            self._client_loop = loop
        return self._client

    def _auth_headers(self) -> dict[str, Any]:
        import openai

        key = resolve_api_key(self._config)
        return {"Authorization": f"Bearer {key}" if key else openai.omit}

    def _error(self, exc: openai.APIError) -> RemoteError:
        """The typed, one-sentence error for what the client raised."""
        import httpx2
        import openai

        where = self._where
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                self._healthy = False
                return RemoteAuthError(f"The remote server {where} refused the API key "
                                       f"(HTTP {status}); check the key in "
                                       f"{self._config.api_key_env or 'the keyring'}.")
            detail = exc.response.text.strip().replace("\n", " ")[:200]
            return RemoteError(f"The remote server {where} answered HTTP {status}: {detail}")
        cause = exc.__cause__
        if isinstance(exc, openai.APITimeoutError):
            if isinstance(cause, httpx2.ConnectTimeout):
                self._healthy = False
                return RemoteUnreachableError(
                    f"The remote server {where} cannot be reached (timed out).")
            return RemoteStreamError(f"The remote server {where} sent nothing for "
                                     f"{self._config.read_timeout_s:.0f} s.")
        if isinstance(exc, openai.APIConnectionError):
            if isinstance(cause, httpx2.ConnectError):
                self._healthy = False
                reason = _os_reason(cause)
                return RemoteUnreachableError(
                    f"The remote server {where} cannot be reached ({reason}).")
            return RemoteStreamError(f"The remote server {where} closed the connection "
                                     "mid-stream.")
        return RemoteError(f"The remote server reported an error: {exc.message[:200]}")

    # -- streaming -----------------------------------------------------------------------------

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The create() arguments; vLLM's extensions go in extra_body."""
        extra: dict[str, Any] = {}
        if self._config.send_chat_template_kwargs and request.thinking is not None:
            extra["chat_template_kwargs"] = {"enable_thinking": request.thinking}
        if request.ignore_eos:
            extra["ignore_eos"] = True
        args: dict[str, Any] = {
            "model": self._config.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": extra,
            "extra_headers": self._auth_headers(),
        }
        if request.seed is not None:
            args["seed"] = request.seed
        if request.stop:
            args["stop"] = list(request.stop)
        if request.top_k > 0:
            extra["top_k"] = request.top_k  # a vLLM extension
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(request, name):
                args[name] = getattr(request, name)
        return args

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        import openai

        request_id = request.request_id or uuid.uuid4().hex
        started = time.monotonic()
        try:
            stream = await self._openai().chat.completions.create(**self._arguments(request))
        except openai.APIError as exc:
            raise self._error(exc) from exc
        self._open[request_id] = stream
        splitter = ThinkingSplitter()
        tokens = 0
        first: float | None = None
        finish: str | None = None
        try:
            try:
                async for chunk in stream:
                    if request_id in self._aborted:
                        break  # chunks already buffered are not the reply any more
                    for choice in chunk.choices:
                        delta = choice.delta
                        content = delta.content or ""
                        extra = delta.model_extra or {}
                        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
                        finish = choice.finish_reason or finish
                        if content or reasoning:
                            tokens += 1
                            now = time.monotonic()
                            if first is None:
                                first = now - started
                            part = splitter.feed(content)
                            yield GenerationDelta(part.text, reasoning + part.thinking, tokens,
                                                  now - started, first)
                    if chunk.usage is not None:
                        tokens = chunk.usage.completion_tokens
            except openai.APIError as exc:
                if request_id not in self._aborted:
                    raise self._error(exc) from exc
            except ValueError as exc:
                raise RemoteStreamError(f"The remote server {self._where} sent a malformed "
                                        "event.") from exc
            if request_id in self._aborted:
                finish = "abort"
            elif finish is None:  # the SDK ends quietly at the end of the body: was it whole?
                raise RemoteStreamError(f"The remote server {self._where} closed the stream "
                                        "before the reply was complete.")
            rest = splitter.flush()
            yield GenerationDelta(rest.text, rest.thinking, tokens, time.monotonic() - started,
                                  first, True, finish)
        finally:
            self._open.pop(request_id, None)
            self._aborted.discard(request_id)
            await stream.close()


def _os_reason(exc: BaseException) -> str:
    """The OS's words for a failed connection ("Connection refused"), else the error's name."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        nxt = exc.__cause__ or exc.__context__
        assert nxt is not None
        if isinstance(nxt, OSError) and (nxt.errno or nxt.strerror):
            # asyncio's own words name the address ("Connect call failed ..."): the OS's are
            # shorter; a DNS failure (negative errno) has only its own.
            return os.strerror(nxt.errno) if nxt.errno and nxt.errno > 0 else str(nxt.strerror)
        exc = nxt
    return str(exc) or type(exc).__name__
