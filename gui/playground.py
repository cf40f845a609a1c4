"""Prompt playground: type a prompt, stream the reply, see timings; stop at any time."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.facade import (
    GIB,
    ChatMessage,
    GenerationDelta,
    GenerationRequest,
    RoutingDecision,
    SwitchEvent,
)
from gui.feedback_bar import FeedbackBackend, FeedbackBar

DEMO_NOTICE = ("Demo model: random weights. The text below is noise, not an answer; it shows "
               "that loading, streaming and switching work.")


class ChatBackend(FeedbackBackend, Protocol):
    """What the playground needs: stream a request on some model, and cancel it."""

    def generate(self, request: GenerationRequest, model: str | None, task_type: str,
                 private: bool) -> AsyncIterator[GenerationDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    def model_choices(self) -> list[str]: ...

    def route_only(self, text: str, task_type: str, private: bool = False, *,
                   free_bytes: int | None = None,
                   temperature_c: float | None = None) -> RoutingDecision: ...

    @property
    def last_decision(self) -> RoutingDecision | None: ...


class PromptEdit(QPlainTextEdit):
    """The prompt editor: Ctrl+Enter sends and Esc stops, read here before the editor would
    take Ctrl+Enter as a new line. (A keyPressEvent override, not an event filter: PySide6's
    bool-returning eventFilter override corrupts the refcount of False and crashes at exit.)"""

    submitted = Signal()
    cancelled = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if ctrl and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.cancelled.emit()
            return
        super().keyPressEvent(event)


class PlaygroundPanel(QWidget):
    """Prompt editor, settings, streaming output (thinking apart from the answer), stats."""

    generation_finished = Signal(object)  # last GenerationDelta, or an Exception
    log = Signal(str, str)

    def __init__(self, backend: ChatBackend, demo_active: Callable[[], bool] = lambda: False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._backend = backend
        self._demo_active = demo_active
        self._shown_decision: RoutingDecision | None = backend.last_decision
        self._task: asyncio.Task[None] | None = None
        self._request_id: str | None = None

        self.prompt = PromptEdit()
        self.prompt.setPlaceholderText("Type a prompt; Ctrl+Enter sends, Esc stops.")
        self.model = QComboBox()
        self.model.addItem("Auto (router)", None)
        for name in backend.model_choices():
            self.model.addItem(name, name)
        self.task_type = QComboBox()
        self.task_type.addItems(["simple_extraction", "standard_parsing", "salary_analysis",
                                 "complex_reasoning", "multi_step_analysis",
                                 "edge_case_handling", "unknown"])
        self.task_type.setCurrentText("standard_parsing")
        self.private = QCheckBox("Private (never sent to a remote endpoint)")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(128)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.7)
        # What-if: route the prompt as if the device had this much free memory / this temperature.
        self.assume_free = QCheckBox("Assume free GiB")
        self.free_gib = QDoubleSpinBox()
        self.free_gib.setRange(0.0, 1024.0)
        self.free_gib.setDecimals(2)
        self.free_gib.setValue(12.0)
        self.assume_temperature = QCheckBox("Assume °C")
        self.gpu_temperature = QDoubleSpinBox()
        self.gpu_temperature.setRange(0.0, 150.0)
        self.gpu_temperature.setDecimals(1)
        self.gpu_temperature.setValue(85.0)
        self.route_button = QPushButton("Route only")
        self.route_button.setToolTip("Show the router's decision for this prompt (with the "
                                     "assumed values, if any) without loading a model")
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)

        self.thinking = QPlainTextEdit()
        self.thinking.setReadOnly(True)
        self.thinking.setPlaceholderText("Thinking (models in thinking mode) appears here.")
        self.answer = QPlainTextEdit()
        self.answer.setReadOnly(True)
        self.answer.setPlaceholderText("The answer streams here.")
        self.stats = QLabel("")
        self.demo_notice = QLabel(DEMO_NOTICE)
        self.demo_notice.setWordWrap(True)
        self.demo_notice.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; "
                                       "padding: 6px; border-radius: 4px; }")
        self.demo_notice.setVisible(False)
        self.explanation = QPlainTextEdit()
        self.explanation.setReadOnly(True)
        self.explanation.setPlaceholderText(
            "With model = Auto, the router's explanation (factors, hardware state, rejected "
            "candidates) appears here.")

        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Task type", self.task_type)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Temperature", self.temperature)
        form.addRow("", self.private)
        what_if = QHBoxLayout()
        for widget in (self.assume_free, self.free_gib, self.assume_temperature,
                       self.gpu_temperature):
            what_if.addWidget(widget)
        what_if.addStretch(1)
        form.addRow("What-if", what_if)
        buttons = QHBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.route_button)
        buttons.addStretch(1)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.prompt, 2)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(QLabel("Router"))
        left_layout.addWidget(self.explanation, 3)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.thinking)
        right.addWidget(self.answer)
        right.setSizes([80, 300])
        right_box = QWidget()
        right_layout = QVBoxLayout(right_box)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.demo_notice)
        right_layout.addWidget(right, 1)
        right_layout.addWidget(self.stats)
        self.feedback_bar = FeedbackBar(backend)  # routing feedback, after a routed reply
        right_layout.addWidget(self.feedback_bar)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right_box)
        split.setSizes([400, 600])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.route_button.clicked.connect(self.route_only)
        self.prompt.submitted.connect(self.send)
        self.prompt.cancelled.connect(self.stop)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.send)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.send)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def send(self) -> None:
        """Start streaming the prompt's reply (no-op while a reply is streaming)."""
        text = self.prompt.toPlainText().strip()
        if self.busy or not text:
            return
        self._request_id = f"playground-{uuid.uuid4().hex[:12]}"
        request = GenerationRequest(
            messages=(ChatMessage("user", text),),
            max_tokens=self.max_tokens.value(),
            temperature=self.temperature.value(),
            request_id=self._request_id,
        )
        self.answer.clear()
        self.thinking.clear()
        self.stats.setText("waiting for the model…")
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._task = asyncio.ensure_future(self._stream(request))

    def route_only(self) -> None:
        """Show the router's decision for the prompt, under the what-if values that are ticked."""
        text = self.prompt.toPlainText().strip()
        free = (int(self.free_gib.value() * GIB) if self.assume_free.isChecked() else None)
        temperature = (self.gpu_temperature.value() if self.assume_temperature.isChecked()
                       else None)
        try:
            decision = self._backend.route_only(text, self.task_type.currentText(),
                                                self.private.isChecked(), free_bytes=free,
                                                temperature_c=temperature)
        except ValueError as exc:  # more free memory assumed than the device has
            self.explanation.setPlainText(f"What-if not possible: {exc}")
            return
        self.explanation.setPlainText(decision.explain())

    def stop(self) -> None:
        """Cancel the reply being streamed."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _stream(self, request: GenerationRequest) -> None:
        last: GenerationDelta | Exception | None = None
        try:
            stream = self._backend.generate(
                request, self.model.currentData(), self.task_type.currentText(),
                self.private.isChecked())
            async for delta in stream:
                if last is None:
                    self.update_context()
                if delta.thinking:
                    self._append(self.thinking, delta.thinking)
                if delta.text:
                    self._append(self.answer, delta.text)
                self.stats.setText(self._format_stats(delta))
                last = delta
        except asyncio.CancelledError:
            self.stats.setText(self.stats.text() + "  (stopped)")
            if self._request_id:
                await self._backend.abort(self._request_id)
        except Exception as exc:  # noqa: BLE001 - any failure is shown, and the UI restored
            last = exc
            self.stats.setText(f"error: {exc}")
            self.log.emit("error", f"generation failed: {exc}")
        finally:
            self.send_button.setEnabled(True)
            self.stop_button.setEnabled(False)
            self.update_context()
            self.feedback_bar.show_for(request.request_id)
            self.generation_finished.emit(last)

    def update_context(self) -> None:
        """Show the router's newest decision (Auto) and whether a demo model is answering."""
        decision = self._backend.last_decision
        if decision is not None and decision is not self._shown_decision:
            self._shown_decision = decision
            self.explanation.setPlainText(decision.explain())
        self.demo_notice.setVisible(self._demo_active())

    def on_switch_event(self, _event: SwitchEvent) -> None:
        self.update_context()

    @staticmethod
    def _append(view: QPlainTextEdit, text: str) -> None:
        cursor = view.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        view.setTextCursor(cursor)

    @staticmethod
    def _format_stats(delta: GenerationDelta) -> str:
        parts = [f"{delta.tokens} tokens"]
        if delta.first_token_s is not None:
            parts.append(f"first token {delta.first_token_s * 1000:.0f} ms")
        if delta.tokens_per_s is not None:
            parts.append(f"{delta.tokens_per_s:.1f} tok/s")
        if delta.finished and delta.finish_reason:
            parts.append(f"finished ({delta.finish_reason})")
        return " · ".join(parts)

    async def shutdown(self) -> None:
        """Cancel a running stream and wait for it to unwind."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
