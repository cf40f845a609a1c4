"""The local API as one switchable service of the running app: build the app, listen, stop.

The GUI's toggle and `--serve` use it; routes of other parts (vrampilot's control routes) are
handed in as routers and share the app's API key and error shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.server.settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from core.runtime import Runtime
    from core.server.serve import ApiServer


class ApiService:
    """Start and stop the local API over one runtime (from the runtime's event loop)."""

    def __init__(self, runtime: Runtime, settings: ServerSettings,
                 routers: Sequence[Callable[[], APIRouter]] = ()) -> None:
        self.runtime = runtime
        self.settings = settings
        # Factories: building a router imports FastAPI, which only a started API should pay for.
        self.routers = tuple(routers)
        self._server: ApiServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    @property
    def address(self) -> str | None:
        return self._server.address if self.running and self._server else None

    async def start(self) -> str:
        """Listen; returns the address. ServerConfigError (no key for a non-loopback host) or
        ServerStartError (port busy), each one sentence."""
        if self.running and self._server is not None:
            return self._server.address
        # Imported here: FastAPI and uvicorn cost the app's start-up when the API stays off.
        from core.server.openai_app import create_app
        from core.server.serve import ApiServer

        app = create_app(self.runtime, self.runtime.scheduler, self.settings)
        for make_router in self.routers:
            app.include_router(make_router(), prefix="/vrampilot")
        server = ApiServer(app, self.settings.host, self.settings.port)
        await server.start()
        self._server = server
        return server.address

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
