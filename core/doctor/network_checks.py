"""The remote endpoint answers (when configured), and the local API's address is free (when on)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from core.doctor.report import Check, Status

if TYPE_CHECKING:
    from core.engine.remote_engine import RemoteConfig


def check_remote(remote: RemoteConfig | None, *, timeout_s: float = 2.0) -> Check:
    """Reachable, key accepted, model served: the Models tab's probe (one place decides)."""
    name = "remote endpoint"
    if remote is None:
        return Check(name, Status.SKIP, "not configured (no remote: section)")
    from core.engine.remote_health import RemoteState, check_remote_health

    health = check_remote_health(remote, timeout_s=timeout_s)
    found = f"{health.state.value}: {health.detail}"
    if health.state is RemoteState.REACHABLE:
        return Check(name, Status.OK, health.detail)
    if health.state is RemoteState.REFUSED_KEY:
        where = f"${remote.api_key_env}" if remote.api_key_env else "the keyring (Settings)"
        return Check(name, Status.WARN, found, f"set the endpoint's API key in {where}")
    if health.state is RemoteState.NOT_SERVING:
        return Check(name, Status.WARN, found, "set remote.model to one of the served names")
    return Check(name, Status.WARN, found,
                 f"start the server behind {remote.base_url}, or fix remote.base_url in your "
                 "config (without it the cascade's last step is skipped)")


def server_address(config: Any) -> tuple[str, int] | None:
    """The local API's (host, port) when a `server:` section turns it on; None when it is off.

    Read by attribute: the section is optional, and absent from configs that predate it.
    """
    server = getattr(config, "server", None)
    if server is None or not getattr(server, "enabled", True):
        return None
    port = getattr(server, "port", None)
    if port is None:
        return None
    return str(getattr(server, "host", "127.0.0.1")), int(port)


def check_api_address(address: tuple[str, int] | None) -> Check:
    """Bind the address as the server would (SO_REUSEADDR, like uvicorn): free, or who holds it."""
    name = "local API address"
    if address is None:
        return Check(name, Status.SKIP, "the local API is off")
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        holder = _listener(port)
        return Check(name, Status.WARN,
                     f"{host}:{port} cannot be bound ({exc.strerror or exc})"
                     + (f"; {holder} listens there" if holder else ""),
                     "stop that program, or choose another port (server.port / --serve)")
    return Check(name, Status.OK, f"{host}:{port} is free")


def _listener(port: int) -> str | None:
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "another process"
                try:
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except (psutil.Error, OSError):
        return None
    return None
