"""The owner's control endpoint: uvicorn serving the control routes on the Unix socket beside
the owner lock, as a task on the owner's own event loop (the app's qasync loop, or asyncio.run
of a headless command)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.server.control_routes import Owner, control_router
from core.server.instance_lock import MAX_SOCKET_PATH, InstanceLock

if TYPE_CHECKING:
    from core.runtime import Runtime

START_TIMEOUT_S = 10.0


class _OwnLoopServer(uvicorn.Server):
    """uvicorn without its signal handlers: the owner's (the window's close, Ctrl-C of a
    command) stay in charge, and stopping is the owner's call (ControlServer.close)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_private_socket(lock: InstanceLock) -> socket.socket:
    """Bind the control socket, mode 0600, before it listens (uvicorn's own uds= would chmod it
    0666). A socket file left by a dead owner is removed first: we hold the lock."""
    path = lock.socket_path
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise OSError(f"the control socket path {path} is too long for a Unix socket; "
                      "set VRAMPILOT_RUNTIME_DIR to a shorter directory")
    lock.remove_stale_socket()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # nobody can connect before listen(), so no window is open
    except OSError:
        sock.close()
        raise
    return sock


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """422 with one sentence naming the field (a command shows `detail` as its error), not
    pydantic's list of error objects."""
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return JSONResponse({"detail": f"the request body is not valid JSON: {err.get('msg')}"},
                            status_code=422)
    field = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query")) or "body"
    return JSONResponse({"detail": f"invalid {field}: {err.get('msg')}"}, status_code=422)


class ControlServer:
    """Serves the control routes while this process holds the owner lock."""

    def __init__(self, runtime: Runtime, lock: InstanceLock, owner: Owner,
                 graceful_s: int = 1) -> None:
        if not lock.held:
            raise RuntimeError("only the owner lock's holder serves the control socket")
        self.runtime = runtime
        self.lock = lock
        self.owner = owner
        app = FastAPI(title="vrampilot control", docs_url=None, redoc_url=None,
                      openapi_url=None)
        app.include_router(control_router(runtime, owner))
        app.add_exception_handler(RequestValidationError, _invalid_request)
        # graceful_s: how long close() lets running requests (an attached generate) finish.
        config = uvicorn.Config(app, lifespan="off", http="h11", ws="none", log_config=None,
                                access_log=False, timeout_graceful_shutdown=graceful_s)
        self._server = _OwnLoopServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return self._server.started and self._task is not None and not self._task.done()

    def requests_in_flight(self) -> int:
        return len(self._server.server_state.tasks)

    async def start(self) -> None:
        """Bind the socket and serve; returns once it accepts connections."""
        sock = bind_private_socket(self.lock)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        self._task.set_name("control-server")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the control server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the control server did not start in time")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop accepting, let running requests finish (at most graceful_s), remove the
        socket. The lock itself stays held until the caller releases it."""
        task = self._task
        if task is None:
            return
        self.owner.end_streams()
        self._server.should_exit = True
        grace = self._server.config.timeout_graceful_shutdown or 0.0
        try:
            await asyncio.wait_for(asyncio.shield(task), grace + 2.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception:  # noqa: BLE001 - the server failed earlier; closing goes on
            pass
        finally:
            self._task = None
            with contextlib.suppress(FileNotFoundError):
                self.lock.socket_path.unlink()
