"""An engine on an OpenAI-compatible server (a vLLM server elsewhere, or a cloud API).

Streaming ``/v1/chat/completions`` over server-sent events with a small HTTP/1.1 client on
``asyncio.open_connection`` (no extra dependency). Every wait is bounded: connect and read
timeouts, a few retries when the connection cannot be made. The API key comes only from an
environment variable or the system keyring, and is never logged, stored or put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.engine.base import (
    EngineError,
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


def _served_models(body: bytes) -> list[str] | None:
    """The model ids of an OpenAI /models answer; None when the answer is not such a list."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


class _Response:
    def __init__(self, status: int, headers: dict[str, str], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.status = status
        self.headers = headers
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class RemoteEngine:
    """Implements core.engine.base.Engine against an OpenAI-compatible HTTP server."""

    def __init__(self, config: RemoteConfig) -> None:
        parts = urlsplit(config.base_url.rstrip("/"))  # checked by RemoteConfig
        self._config = config
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = parts.scheme == "https"
        self._path = parts.path or ""
        self._spec: LoadSpec | None = None
        self._healthy = False
        self._open: dict[str, _Response] = {}
        self._aborted: set[str] = set()

    @property
    def config(self) -> RemoteConfig:
        return self._config

    # -- protocol ------------------------------------------------------------------------------

    async def load(self, spec: LoadSpec) -> None:
        """Check the server answers, accepts the key and serves the model, by listing its
        models."""
        resp = await self._request("GET", "/models", None)
        try:
            body = await self._read_body(resp)
        finally:
            resp.close()
        self._raise_for_status(resp.status, body)
        served = _served_models(body)
        if served is not None and self._config.model not in served:
            raise RemoteModelNotServedError(
                f"The remote server {self._where()} does not serve {self._config.model!r} "
                f"(it serves: {', '.join(served) or 'nothing'}).")
        self._spec = spec
        self._healthy = True

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        return self._generate(request)

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)
        resp = self._open.get(request_id)
        if resp is not None:
            resp.close()

    async def shutdown(self) -> None:
        for resp in list(self._open.values()):
            resp.close()
        self._open.clear()
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

    # -- HTTP ----------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self._host}:{self._port}{self._path}"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = ssl.create_default_context() if self._tls else None
        last: BaseException | None = None
        for attempt in range(self._config.connect_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.25 * 2 ** (attempt - 1), 2.0))
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port, ssl=ctx,
                                            server_hostname=self._host if ctx else None),
                    self._config.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                last = exc
        self._healthy = False
        reason = "timed out" if isinstance(last, TimeoutError) else (
            getattr(last, "strerror", None) or type(last).__name__)
        raise RemoteUnreachableError(
            f"The remote server {self._where()} cannot be reached ({reason}).") from last

    async def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> _Response:
        reader, writer = await self._connect()
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = {
            "Host": f"{self._host}:{self._port}",
            "User-Agent": "vrampilot",
            "Accept": "text/event-stream, application/json",
            "Connection": "close",
            "Content-Length": str(len(body)),
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        key = resolve_api_key(self._config)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        head = f"{method} {self._path}{path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        try:
            writer.write(head.encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), self._config.read_timeout_s)
            status_line = await self._readline(reader)
            parts = status_line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise RemoteStreamError(f"The remote server {self._where()} did not answer "
                                        "with HTTP.")
            resp_headers: dict[str, str] = {}
            while True:
                line = (await self._readline(reader)).decode("latin-1").strip()
                if not line:
                    break
                name, _, value = line.partition(":")
                resp_headers[name.strip().lower()] = value.strip()
        except BaseException:
            writer.close()
            raise
        return _Response(int(parts[1]), resp_headers, reader, writer)

    async def _readline(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readline(), self._config.read_timeout_s)
        except TimeoutError as exc:
            raise RemoteStreamError(f"The remote server {self._where()} sent nothing for "
                                    f"{self._config.read_timeout_s:.0f} s.") from exc
        except (ConnectionError, OSError) as exc:
            raise RemoteStreamError(f"The remote server {self._where()} closed the connection "
                                    "mid-stream.") from exc
        return line

    async def _body_lines(self, resp: _Response) -> AsyncIterator[bytes]:
        """Body lines, undoing chunked transfer encoding; ends at the end of the body."""
        reader = resp.reader
        if resp.headers.get("transfer-encoding", "").lower() != "chunked":
            length = resp.headers.get("content-length")
            remaining = int(length) if length and length.isdigit() else None
            while remaining is None or remaining > 0:
                line = await self._readline(reader)
                if not line:
                    if remaining:
                        raise RemoteStreamError(f"The remote server {self._where()} closed the "
                                                "connection mid-stream.")
                    return
                if remaining is not None:
                    remaining -= len(line)
                yield line
            return
        pending = b""
        while True:
            size_line = await self._readline(reader)
            if not size_line:
                raise RemoteStreamError(f"The remote server {self._where()} closed the "
                                        "connection mid-stream.")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                if pending:
                    yield pending
                return
            try:
                chunk = await asyncio.wait_for(reader.readexactly(size + 2),
                                               self._config.read_timeout_s)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                raise RemoteStreamError(f"The remote server {self._where()} closed the "
                                        "connection mid-stream.") from exc
            except TimeoutError as exc:
                raise RemoteStreamError(f"The remote server {self._where()} stalled "
                                        "mid-stream.") from exc
            data = pending + chunk[:-2]
            *lines, pending = data.split(b"\n")
            for line in lines:
                yield line + b"\n"

    async def _read_body(self, resp: _Response) -> bytes:
        return b"".join([line async for line in self._body_lines(resp)])

    def _raise_for_status(self, status: int, body: bytes) -> None:
        if status in (401, 403):
            self._healthy = False
            raise RemoteAuthError(f"The remote server {self._where()} refused the API key "
                                  f"(HTTP {status}); check the key in "
                                  f"{self._config.api_key_env or 'the keyring'}.")
        if status >= 400:
            detail = body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
            raise RemoteError(f"The remote server {self._where()} answered HTTP {status}: "
                              f"{detail}")

    # -- streaming -----------------------------------------------------------------------------

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._config.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.stop:
            payload["stop"] = list(request.stop)
        if request.top_k > 0:
            payload["top_k"] = request.top_k  # a vLLM extension
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(request, name):
                payload[name] = getattr(request, name)
        if self._config.send_chat_template_kwargs and request.thinking is not None:
            payload["chat_template_kwargs"] = {"enable_thinking": request.thinking}
        if request.ignore_eos:
            payload["ignore_eos"] = True  # a vLLM extension
        return payload

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        request_id = request.request_id or uuid.uuid4().hex
        started = time.monotonic()
        resp = await self._request("POST", "/chat/completions", self._payload(request))
        if resp.status != 200:
            try:
                body = await self._read_body(resp)
            finally:
                resp.close()
            self._raise_for_status(resp.status, body)
            raise RemoteError(f"The remote server {self._where()} answered HTTP {resp.status}.")
        self._open[request_id] = resp
        splitter = ThinkingSplitter()
        tokens = 0
        first: float | None = None
        finish: str | None = None
        done = False
        try:
            try:
                async for raw in self._body_lines(resp):
                    if request_id in self._aborted:
                        break  # lines already buffered are not the reply any more
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    event = json.loads(data)
                    if "error" in event and not event.get("choices"):
                        raise RemoteError(f"The remote server reported an error: "
                                          f"{str(event['error'])[:200]}")
                    usage = event.get("usage") or {}
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        content = delta.get("content") or ""
                        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                        finish = choice.get("finish_reason") or finish
                        if content or reasoning:
                            tokens += 1
                            now = time.monotonic()
                            if first is None:
                                first = now - started
                            part = splitter.feed(content)
                            yield GenerationDelta(part.text, reasoning + part.thinking, tokens,
                                                  now - started, first)
                    if usage.get("completion_tokens") is not None:
                        tokens = int(usage["completion_tokens"])
            except (RemoteStreamError, EngineError):
                if request_id in self._aborted:
                    finish, done = "abort", True
                else:
                    raise
            except ValueError as exc:
                raise RemoteStreamError(f"The remote server {self._where()} sent a malformed "
                                        "event.") from exc
            if not done and request_id in self._aborted:
                finish, done = "abort", True
            if not done:
                raise RemoteStreamError(f"The remote server {self._where()} closed the stream "
                                        "before the reply was complete.")
            rest = splitter.flush()
            yield GenerationDelta(rest.text, rest.thinking, tokens, time.monotonic() - started,
                                  first, True, finish)
        finally:
            self._open.pop(request_id, None)
            self._aborted.discard(request_id)
            resp.close()
