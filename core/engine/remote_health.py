"""Is the configured remote endpoint usable now? One bounded probe, for the Models tab.

It is the remote engine's own load check (list the served models with the configured key), on
short timeouts and without retries, run to completion on its own event loop: a front end calls it
from a worker thread, so a slow DNS answer or a keyring prompt never holds its event loop.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass

from core.engine.base import (
    LoadSpec,
    RemoteAuthError,
    RemoteError,
    RemoteModelNotServedError,
    RemoteUnreachableError,
)
from core.engine.remote_engine import RemoteConfig, RemoteEngine


class RemoteState(enum.Enum):
    REACHABLE = "reachable"  # it answers, accepts the key and serves the configured model
    REFUSED_KEY = "refused key"
    UNREACHABLE = "unreachable"
    NOT_SERVING = "not serving the model"
    FAILING = "failing"  # it answers, with an HTTP error or not in the OpenAI shape


@dataclass(frozen=True)
class RemoteHealth:
    state: RemoteState
    detail: str  # one sentence: what the endpoint answered (never the key)
    checked_at: float  # time.time()


def check_remote_health(config: RemoteConfig, timeout_s: float = 3.0) -> RemoteHealth:
    """Probe the endpoint; blocks up to about 2 × timeout_s. Never raises for the endpoint's
    answer: every outcome is a state."""
    probe = RemoteEngine(config.model_copy(update={
        "connect_timeout_s": min(config.connect_timeout_s, timeout_s),
        "read_timeout_s": min(config.read_timeout_s, timeout_s), "connect_retries": 0}))

    async def load() -> None:
        try:
            await probe.load(LoadSpec(model_id=config.model, path=config.base_url))
        finally:
            await probe.shutdown()

    try:
        asyncio.run(load())
    except RemoteAuthError as exc:
        return RemoteHealth(RemoteState.REFUSED_KEY, str(exc), time.time())
    except RemoteUnreachableError as exc:
        return RemoteHealth(RemoteState.UNREACHABLE, str(exc), time.time())
    except RemoteModelNotServedError as exc:
        return RemoteHealth(RemoteState.NOT_SERVING, str(exc), time.time())
    except RemoteError as exc:
        return RemoteHealth(RemoteState.FAILING, str(exc), time.time())
    return RemoteHealth(RemoteState.REACHABLE,
                        f"{config.base_url} serves {config.model!r}.", time.time())
