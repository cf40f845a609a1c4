"""Serve a FastAPI app with uvicorn on the caller's event loop (the GUI's qasync loop).

uvicorn's `Server.serve()` would install its own SIGINT/SIGTERM handlers and bind with
`sys.exit` on failure; here the app keeps its handlers, and we bind the socket ourselves so a
busy port is a clear error, not an exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

START_TIMEOUT_S = 10.0
START_POLL_S = 0.01
STOP_TIMEOUT_S = 5.0


class ServerStartError(RuntimeError):
    """The API could not start listening; str() is one sentence."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on
    connections whose socket says TCP, and without it Nagle's algorithm held the first token
    of a stream back for a delayed ACK (about 40 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class _AppOwnedSignals(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the app's own SIGINT/SIGTERM handlers stay in place


class ApiServer:
    """One uvicorn server for one app; start() listens, stop() ends it (idempotent)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        try:
            sock = _listen(self.host, self.port)
        except OSError as exc:
            raise ServerStartError(f"Cannot listen on {self.host}:{self.port}: "
                                   f"{exc.strerror or exc}.") from None
        self._socket = sock
        self.port = sock.getsockname()[1]  # the real one when 0 asked for any free port
        # log_config=None: uvicorn must not reconfigure the app's logging; no access log.
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2, ws="none")
        self._server = server = _AppOwnedSignals(config)
        self._task = asyncio.ensure_future(server.serve(sockets=[sock]))
        self._task.set_name(f"api-server-{self.port}")
        for _ in range(int(START_TIMEOUT_S / START_POLL_S)):  # uvicorn offers no start event
            if server.started or self._task.done():
                break
            await asyncio.sleep(START_POLL_S)
        if not server.started:
            await self.stop()
            raise ServerStartError(f"The API server on {self.address} did not start.")

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is not None and task is not None and not task.done():
            server.should_exit = True
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            if not done:
                server.force_exit = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._task = None
