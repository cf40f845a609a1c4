"""What the engine is doing right now, reported by the manager and engines.

The simulated device reads it to drive its power, temperature and VRAM; nothing else depends on it.
Thread-safe: written from the event loop, read from the sampler thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ActivityState:
    loaded_bytes: int
    loading: bool
    active_streams: int
    model_id: str | None


class EngineActivity:
    """A small thread-safe record of engine activity."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded_bytes = 0
        self._loading = False
        self._streams = 0
        self._model_id: str | None = None

    def set_loading(self, loading: bool, model_id: str | None = None) -> None:
        with self._lock:
            self._loading = loading
            if model_id is not None:
                self._model_id = model_id

    def set_loaded(self, model_id: str | None, loaded_bytes: int) -> None:
        """A model now occupies loaded_bytes of device memory (0 and None after an unload)."""
        with self._lock:
            self._model_id = model_id
            self._loaded_bytes = max(0, loaded_bytes)

    def stream_started(self) -> None:
        with self._lock:
            self._streams += 1

    def stream_ended(self) -> None:
        with self._lock:
            self._streams = max(0, self._streams - 1)

    def state(self) -> ActivityState:
        with self._lock:
            return ActivityState(self._loaded_bytes, self._loading, self._streams, self._model_id)
