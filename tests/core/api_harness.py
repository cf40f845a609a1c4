"""A real Runtime and the local API served by uvicorn on an event loop in a background thread, so
tests can talk to it with the official (synchronous) `openai` client like any other program."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from core.runtime import Runtime
from core.server.openai_app import create_app
from core.server.serve import ApiServer
from core.server.settings import ServerSettings

T = TypeVar("T")


class ServedRuntime:
    """`with ServedRuntime(...) as served:` -> served.base_url, served.call(coro)."""

    def __init__(self, data_dir: Path, settings: ServerSettings | None = None,
                 config_file: Path | None = None) -> None:
        self.data_dir = data_dir
        self.settings = settings or ServerSettings(enabled=True, port=0)
        self.config_file = config_file
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="api-test-loop",
                                        daemon=True)
        self.runtime: Runtime
        self.server: ApiServer

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/v1"

    async def _start(self) -> None:
        self.runtime = Runtime.create(self.config_file,
                                      history_path=self.data_dir / "history.sqlite3")
        app = create_app(self.runtime, self.runtime.scheduler, self.settings)
        self.server = ApiServer(app, self.settings.host, self.settings.port)
        await self.server.start()

    async def _stop(self) -> None:
        await self.server.stop()
        await self.runtime.close()

    def __enter__(self) -> ServedRuntime:
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self._stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
