"""Side by side: the playground's prompt and settings on two or three models, one after the
other (each switch made by the manager), the replies in columns with first-token time, tokens/s,
tokens and what the switch to that model cost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.facade import MAX_MODELS, GenerationRequest, ModelRun


class CompareBackend(Protocol):
    def model_choices(self) -> list[str]: ...

    def side_by_side(self, request: GenerationRequest, models: list[str],
                     private: bool = False) -> AsyncIterator[tuple[int, ModelRun]]: ...


def run_stats(run: ModelRun) -> str:
    """The column's figures: switch cost (with its phases), first token, tok/s, tokens."""
    if run.switch_outcome is None:
        switch = "switch: waiting…"
    elif run.switch_outcome == "noop":
        switch = "switch: none (already active)"
    else:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in run.switch_phases.items() if v >= 0.05)
        switch = f"switch: {run.switch_s or 0:.1f} s" + (f" ({phases})" if phases else "")
        if run.switch_outcome != "ready":
            switch += f" [{run.switch_outcome}]"
    first = "-" if run.first_token_s is None else f"{run.first_token_s * 1000:.0f} ms"
    rate = "-" if run.tokens_per_s is None else f"{run.tokens_per_s:.1f} tok/s"
    out = f"{switch}\nfirst token {first} · {rate} · {run.tokens} tokens"
    if run.error:
        out += f"\nerror: {run.error}"
    return out


class SideBySidePanel(QWidget):
    """Model pickers, Run / Stop, one column per model."""

    event_line = Signal(str, str)  # (level, text) for the Events tab
    finished = Signal(object)  # list[ModelRun]

    def __init__(self, backend: CompareBackend,
                 make_request: Callable[[str], GenerationRequest | None],
                 private: Callable[[], bool] = lambda: False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._backend = backend
        self._make_request = make_request
        self._private = private
        self._task: asyncio.Task[None] | None = None
        self.runs: list[ModelRun] = []
        choices = backend.model_choices()
        self.pickers: list[QComboBox] = []
        pick_row = QHBoxLayout()
        for i in range(MAX_MODELS):
            box = QComboBox()
            if i == MAX_MODELS - 1:
                box.addItem("(none)", None)
            for name in choices:
                box.addItem(name, name)
            box.setCurrentIndex(min(i, box.count() - 1))
            self.pickers.append(box)
            pick_row.addWidget(box)
        self.run_button = QPushButton("Run side by side")
        self.run_button.setToolTip("The prompt and settings on the left, on each model in turn")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        pick_row.addWidget(self.run_button)
        pick_row.addWidget(self.stop_button)
        self.columns: list[tuple[QGroupBox, QLabel, QPlainTextEdit]] = []
        cols = QHBoxLayout()
        for _ in range(MAX_MODELS):
            group = QGroupBox("")
            stats = QLabel("")
            stats.setWordWrap(True)
            text = QPlainTextEdit()
            text.setReadOnly(True)
            inner = QVBoxLayout(group)
            inner.addWidget(stats)
            inner.addWidget(text, 1)
            group.setVisible(False)
            self.columns.append((group, stats, text))
            cols.addWidget(group)
        layout = QVBoxLayout(self)
        layout.addLayout(pick_row)
        layout.addLayout(cols, 1)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def models(self) -> list[str]:
        return [m for m in (b.currentData() for b in self.pickers) if m is not None]

    def run(self) -> None:
        models = self.models()
        if self.busy or len(models) < 2:
            return
        if len(set(models)) != len(models):
            self.event_line.emit("error", "side by side: pick different models")
            return
        request = self._make_request(f"compare-{uuid.uuid4().hex[:8]}")
        if request is None:
            return
        for i, (group, stats, text) in enumerate(self.columns):
            group.setVisible(i < len(models))
            group.setTitle(models[i] if i < len(models) else "")
            stats.setText("waiting…")
            text.clear()
        self.runs = [ModelRun(m) for m in models]
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._task = asyncio.ensure_future(self._run(request, models))

    async def _run(self, request: GenerationRequest, models: list[str]) -> None:
        shown = [0] * len(models)
        try:
            async for column, run in self._backend.side_by_side(request, models,
                                                                self._private()):
                self.runs[column] = run
                _group, stats, text = self.columns[column]
                if len(run.text) > shown[column]:
                    cursor = text.textCursor()
                    cursor.movePosition(cursor.MoveOperation.End)
                    cursor.insertText(run.text[shown[column]:])
                    shown[column] = len(run.text)
                stats.setText(run_stats(run))
                if run.error:
                    self.event_line.emit("error", f"side by side, {run.model}: {run.error}")
        finally:
            self.run_button.setEnabled(True)
            self.stop_button.setEnabled(False)
            self.finished.emit(self.runs)

    def stop(self) -> None:
        if self.busy and self._task is not None:
            self._task.cancel()

    async def shutdown(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
