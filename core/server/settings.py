"""The `server:` config section and the checks that run before the API listens."""

from __future__ import annotations

import ipaddress
import os
import re

from pydantic import BaseModel, ConfigDict, Field

from core.scheduler import DEFAULT_MAX_QUEUE

LOOPBACK_NAMES = ("localhost",)


class ServerSettings(BaseModel):
    """The local API: off by default, loopback by default, an API key for anything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)  # 0: any free port (tests)
    api_key_env: str | None = None  # the environment variable holding the API key
    max_queue: int = Field(default=DEFAULT_MAX_QUEUE, ge=1)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class ServerConfigError(ValueError):
    """The server cannot start with these settings; str() is one sentence."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_serve(value: str) -> tuple[str | None, int]:
    """`--serve [HOST:]PORT` -> (host or None, port). ValueError names what is wrong."""
    match = re.fullmatch(r"(?:\[?(?P<host>[^\]]*?)\]?:)?(?P<port>\d+)", value.strip())
    if match is None:
        raise ValueError(f"--serve expects [HOST:]PORT, got {value!r}")
    port = int(match["port"])
    if not 0 <= port <= 65535:
        raise ValueError(f"--serve: port {port} is outside 0-65535")
    return match["host"] or None, port


def resolve_api_key(settings: ServerSettings) -> str | None:
    """The API key from the environment variable the config names (None: no key).

    A non-loopback address without a key is refused: anyone on the network could use the GPU.
    """
    key = os.environ.get(settings.api_key_env, "").strip() if settings.api_key_env else ""
    if not key and not settings.loopback:
        where = (f"the environment variable {settings.api_key_env} is empty or unset"
                 if settings.api_key_env else "no server.api_key_env is configured")
        raise ServerConfigError(
            f"Refusing to serve on {settings.host}, which is not a loopback address, without an "
            f"API key: {where}.")
    return key or None
