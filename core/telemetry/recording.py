"""Recording a stretch of monitoring to a file, to open later (read-only, the same charts).

The file is TelemetryHistory's CSV export format (``timestamp`` then one column per metric), so
``TelemetryHistory.from_csv`` reopens it. Rows are written as samples arrive, on the sampler
thread, and flushed about once a second: a crash loses at most the last second.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from core.paths import data_dir
from core.telemetry.alerts import AlertEvent
from core.telemetry.history import sample_metrics
from core.telemetry.sampler import Sampler
from core.telemetry.snapshot import Sample

FLUSH_EVERY_S = 1.0


def recordings_dir() -> Path:
    """Where recordings go by default: <user data>/recordings/."""
    path = data_dir() / "recordings"
    path.mkdir(parents=True, exist_ok=True)
    return path


class TelemetryRecorder:
    """Writes every sample of a sampler to a CSV file between start() and stop()."""

    def __init__(self, sampler: Sampler, path: Path | None = None) -> None:
        self.sampler = sampler
        self.path = path or recordings_dir() / time.strftime("monitoring-%Y%m%d-%H%M%S.csv")
        self.rows = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._writer: Any = None  # csv.writer's type is private to typeshed
        self._names: list[str] | None = None
        self._flushed = 0.0
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def recording(self) -> bool:
        return self._file is not None

    def start(self) -> Path:
        """Open the file and record from the next sample on."""
        with self._lock:
            if self._file is not None:
                return self.path
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._names = None
            self.rows = 0
        self._unsubscribe = self.sampler.subscribe(self._on_sample)
        return self.path

    def stop(self) -> Path:
        """Stop recording and close the file (it holds what was recorded)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        with self._lock:
            if self._file is not None:
                if self._names is None:  # nothing arrived: still a readable, empty recording
                    self._writer.writerow(["timestamp"])
                self._file.close()
            self._file = None
            self._writer = None
        return self.path

    def _on_sample(self, sample: Sample, _events: list[AlertEvent]) -> None:
        values = sample_metrics(sample)
        with self._lock:
            if self._file is None or self._writer is None:
                return
            if self._names is None:
                # The columns of the first sample: a metric that appears later (a GPU plugged in
                # mid-recording) is not in this file.
                self._names = list(values)
                self._writer.writerow(["timestamp", *self._names])
            self._writer.writerow([repr(float(sample.host.timestamp)),
                                   *(_cell(values.get(n, math.nan)) for n in self._names)])
            self.rows += 1
            now = time.monotonic()
            if now - self._flushed >= FLUSH_EVERY_S:
                self._file.flush()
                self._flushed = now


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))
