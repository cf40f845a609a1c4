"""The remote endpoint answers (when configured), and the local API's address is free (when on)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from core.doctor.report import Check, Status

if TYPE_CHECKING:
    from core.engine.remote_engine import RemoteConfig


def check_remote(remote: RemoteConfig | None, *, timeout_s: float = 2.0) -> Check:
    """GET {base_url}/models with the configured key: reachable, key accepted, model served."""
    name = "remote endpoint"
    if remote is None:
        return Check(name, Status.SKIP, "not configured (no remote: section)")
    import httpx

    from core.engine.remote_engine import resolve_api_key

    url = remote.base_url.rstrip("/") + "/models"
    key = resolve_api_key(remote)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    fix_url = f"start the server behind {remote.base_url}, or fix remote.base_url in your config" \
              " (without it the cascade's last step is skipped)"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Check(name, Status.WARN, f"{url} unreachable ({exc or type(exc).__name__})",
                     fix_url)
    if response.status_code in (401, 403):
        where = f"${remote.api_key_env}" if remote.api_key_env else "remote.api_key_env"
        return Check(name, Status.WARN, f"{url} refused the key (HTTP {response.status_code})",
                     f"set the endpoint's API key in {where}")
    if response.status_code != 200:
        return Check(name, Status.WARN, f"{url} answered HTTP {response.status_code}", fix_url)
    try:
        served = [str(m.get("id")) for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        return Check(name, Status.WARN, f"{url} did not answer with a model list", fix_url)
    if remote.model not in served:
        return Check(name, Status.WARN,
                     f"{url} serves {', '.join(served) or 'no model'}, not {remote.model!r}",
                     "set remote.model to one of the served names")
    return Check(name, Status.OK, f"{url} serves {remote.model!r}")


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
