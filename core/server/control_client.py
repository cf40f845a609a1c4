"""The CLI's side of the control socket: find the running owner and ask it (httpx over the
Unix socket), or take the owner lock and run here when none runs.

httpx is imported where a socket is there to talk to: a command with no owner need not pay
for it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from core.server.errors import ControlError, OwnerUnreachable
from core.server.instance_lock import InstanceLock

if TYPE_CHECKING:
    import httpx

__all__ = ["ControlClient", "ControlError", "OwnerUnreachable", "ask_owner", "attach_or_own",
           "find_owner"]

T = TypeVar("T")
PROBE_TIMEOUT_S = 2.0
# An owner that has just taken the lock needs a moment (Qt, the runtime) before it serves.
ATTACH_WAIT_S = 30.0


class ControlClient:
    """A connection to the owner's control endpoint. `owner` is what /owner said."""

    def __init__(self, socket_path: Path, client: httpx.Client, owner: dict[str, Any]) -> None:
        self.socket_path = socket_path
        self.owner = owner
        self._client = client

    @classmethod
    def connect(cls, socket_path: Path, timeout_s: float = PROBE_TIMEOUT_S
                ) -> ControlClient | None:
        """A client if an owner answers on socket_path, else None (no file, nobody listening)."""
        if not socket_path.exists():
            return None
        import httpx

        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                              base_url="http://vrampilot", timeout=timeout_s)
        try:
            response = client.get("/owner")
            response.raise_for_status()
            owner = response.json()
        except (httpx.HTTPError, ValueError):
            client.close()
            return None
        # Replies (a switch, a whole generation) take as long as they take.
        client.timeout = httpx.Timeout(timeout_s, read=None)
        return cls(socket_path, client, owner)

    @property
    def pid(self) -> int:
        return int(self.owner["pid"])

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, json=body or {})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._gone(exc) from None
        _raise_for_status(response)
        return response.json()

    def stream_events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST, then yield each line of the NDJSON reply as it arrives."""
        import httpx

        try:
            with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise self._gone(exc) from None

    def _gone(self, exc: Exception) -> OwnerUnreachable:
        return OwnerUnreachable(f"the vrampilot owner (pid {self.pid}) stopped answering "
                                f"({type(exc).__name__})")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise ControlError(response.status_code, str(detail))


def attach_or_own(lock: InstanceLock, kind: str, wait_s: float = ATTACH_WAIT_S
                  ) -> ControlClient | None:
    """The running owner's client, or None after taking the lock (this process owns now).

    Tries both until one works: the owner may be starting (lock held, socket not served yet) or
    quitting (socket gone, lock about to be free).
    """
    deadline = time.monotonic() + wait_s
    while True:
        if lock.try_acquire(kind):
            return None
        client = ControlClient.connect(lock.socket_path)
        if client is not None:
            return client
        if time.monotonic() > deadline:
            holder = lock.holder()
            who = f"pid {holder[0]} ({holder[1]})" if holder else "another process"
            raise OwnerUnreachable(
                f"{who} holds the vrampilot lock {lock.lock_path} but does not answer on "
                f"{lock.socket_path} after {wait_s:.0f} s")
        time.sleep(0.1)


def _same_setup(args: argparse.Namespace, owner: dict[str, Any]) -> bool:
    """Whether the command asks about the configuration the owner runs (no --simulate or
    --config of its own, or the owner's)."""
    simulate = getattr(args, "simulate", None)
    config = getattr(args, "config", None)
    if simulate is not None and simulate != owner.get("simulate"):
        return False
    return config is None or str(Path(config).resolve()) == owner.get("config")


def find_owner(args: argparse.Namespace) -> ControlClient | None:
    """The running owner, when one answers and runs the setup the command asks about.

    A command given another --simulate or --config asks a what-if question: answered here.
    """
    client = ControlClient.connect(InstanceLock().socket_path)
    if client is not None and not _same_setup(args, client.owner):
        client.close()
        return None
    return client


def ask_owner(args: argparse.Namespace, ask: Callable[[ControlClient], T]) -> T | None:
    """ask(owner) when an owner answers (see find_owner); None: compute here instead."""
    client = find_owner(args)
    if client is None:
        return None
    with client:
        try:
            return ask(client)
        except OwnerUnreachable:
            return None  # it quit meanwhile: the command works without it
