"""Prompt playground: a multi-turn conversation with a system prompt and every sampling knob,
streamed on the router's (or a named) model; the transcript as Markdown with each reply's
thinking folded; save / open / export; an opt-in list of recent runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent, QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.facade import (
    DEMO_NOTICE,
    GIB,
    Conversation,
    ConversationFileError,
    GenerationDelta,
    GenerationRequest,
    ModelRun,
    PromptCounter,
    RecentRuns,
    Reply,
    RoutingDecision,
    Sampling,
    SwitchEvent,
    reply_stats,
)
from gui.feedback_bar import FeedbackBackend, FeedbackBar
from gui.side_by_side import SideBySidePanel

COUNT_DEBOUNCE_MS = 250
COUNT_GRACE_S = 2.0
FRAME_S = 1 / 30  # streamed text reaches the panes at most this often


class ChatBackend(FeedbackBackend, Protocol):
    """What the playground needs: stream a request on some model, cancel it, and describe models."""

    def generate(self, request: GenerationRequest, model: str | None, task_type: str,
                 private: bool) -> AsyncIterator[GenerationDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    def model_choices(self) -> list[str]: ...

    def route_only(self, text: str, task_type: str, private: bool = False, *,
                   free_bytes: int | None = None,
                   temperature_c: float | None = None) -> RoutingDecision: ...

    @property
    def last_decision(self) -> RoutingDecision | None: ...

    def model_context(self, model_id: str) -> int | None: ...

    def tokenizer_dir(self, model_id: str) -> Path | None: ...

    def thinking_mode(self, model_id: str) -> str: ...

    def active_model(self) -> str | None: ...

    def task_types(self) -> list[str]: ...

    def side_by_side(self, request: GenerationRequest, models: list[str],
                     private: bool = False) -> AsyncIterator[tuple[int, ModelRun]]: ...


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


def parse_stops(text: str) -> tuple[str, ...]:
    """Stop sequences typed as `a | b` ("\\n" means a newline)."""
    return tuple(p.strip().replace("\\n", "\n") for p in text.split("|") if p.strip())


class PlaygroundPanel(QWidget):
    """Conversation, settings, streaming output (thinking apart from the answer), stats."""

    generation_finished = Signal(object)  # last GenerationDelta, or an Exception
    # After each finished reply: (turn index, core.conversation.Reply). The reply carries the
    # model, the router's decision (routing, when Auto chose) and its timings: feedback on the
    # routing (good / wrong model) attaches here.
    reply_finished = Signal(int, object)
    request_sent = Signal(object)  # the GenerationRequest handed to the backend
    event_line = Signal(str, str)  # (level, text) for the Events tab

    def __init__(self, backend: ChatBackend, demo_active: Callable[[], bool] = lambda: False,
                 recent: RecentRuns | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._backend = backend
        self._demo_active = demo_active
        self._recent = recent
        self._shown_decision: RoutingDecision | None = backend.last_decision
        self._task: asyncio.Task[None] | None = None
        self._request_id: str | None = None
        self._edit_index: int | None = None  # the user turn being edited, if any
        self._expanded: set[int] = set()  # turns whose thinking is unfolded
        self.conversation = Conversation()
        self._counter = PromptCounter()
        self._count_pool: ThreadPoolExecutor | None = None
        self._count_task: asyncio.Task[None] | None = None
        self._count_serial = 0
        self._count_future: Future[int] | None = None
        self._closed = False
        self._shown_system = ""
        self._turn_start: dict[int, int] = {}  # where each shown turn begins in the transcript

        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("System prompt (optional)")
        self.system.setMaximumHeight(70)
        self.prompt = PromptEdit()
        self.prompt.setPlaceholderText("Type a prompt; Ctrl+Enter sends, Esc stops.")
        self.tokens_label = QLabel("")
        self.model = QComboBox()
        self.refresh_models()
        self.task_type = QComboBox()
        self.task_type.addItems(backend.task_types())  # the router's config, not a copy
        self.task_type.setCurrentText("standard_parsing")
        self.private = QCheckBox("Private (never sent to a remote endpoint)")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 32768)
        self.max_tokens.setValue(128)
        self.temperature = _double(0.0, 2.0, 0.7, 0.1)
        self.top_p = _double(0.01, 1.0, 0.95, 0.05)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(-1)
        self.seed.setSpecialValueText("random")
        self.presence_penalty = _double(-2.0, 2.0, 0.0, 0.1)
        self.frequency_penalty = _double(-2.0, 2.0, 0.0, 0.1)
        self.stops = QLineEdit()
        self.stops.setPlaceholderText("e.g. END | \\n\\n")
        self.think = QCheckBox("Think")
        # What-if: route the prompt as if the device had this much free memory / this temperature.
        self.assume_free = QCheckBox("Assume free GiB")
        self.free_gib = _double(0.0, 1024.0, 12.0, 1.0)
        self.assume_temperature = QCheckBox("Assume °C")
        self.gpu_temperature = _double(0.0, 150.0, 85.0, 1.0)
        self.gpu_temperature.setDecimals(1)
        self.route_button = QPushButton("Route only")
        self.route_button.setToolTip("Show the router's decision for this prompt (with the "
                                     "assumed values, if any) without loading a model")
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Answer the last user turn again")
        self.clear_button = QPushButton("Clear")
        self.save_button = QPushButton("Save…")
        self.open_button = QPushButton("Open…")
        self.export_button = QPushButton("Export Markdown…")
        self.keep_recent = QCheckBox("Keep recent runs on this computer")
        self.recent_box = QComboBox()
        self.recent_box.setPlaceholderText("Recent runs")
        self.forget_button = QPushButton("Forget recent runs")
        self.file_status = QLabel("")
        self.file_status.setWordWrap(True)

        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        self.transcript.setPlaceholderText("The conversation appears here.")
        self.thinking = QPlainTextEdit()
        self.thinking.setReadOnly(True)
        self.thinking.setPlaceholderText("Thinking of the reply (models in thinking mode).")
        self.answer = QPlainTextEdit()
        self.answer.setReadOnly(True)
        self.answer.setPlaceholderText("The reply streams here.")
        self.stats = QLabel("")
        self.demo_notice = QLabel(f"{DEMO_NOTICE} It shows that loading, streaming and "
                                  "switching work.")
        self.demo_notice.setWordWrap(True)
        self.demo_notice.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; "
                                       "padding: 6px; border-radius: 4px; }")
        self.demo_notice.setVisible(False)
        self.explanation = QPlainTextEdit()
        self.explanation.setReadOnly(True)
        self.explanation.setPlaceholderText(
            "With model = Auto, the router's explanation (factors, hardware state, rejected "
            "candidates) appears here.")
        self._count_timer = QTimer(self)
        self._count_timer.setObjectName("playground-token-count")
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(COUNT_DEBOUNCE_MS)
        self._count_timer.timeout.connect(self._start_count)
        self.views = QTabWidget()
        self.side_by_side = SideBySidePanel(backend, self.single_request,
                                            self.private.isChecked)
        self._layout()
        self._connect()
        self._on_model_changed()
        self._load_recent_settings()

    def _layout(self) -> None:
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Task type", self.task_type)
        row1 = QHBoxLayout()
        for label, widget in (("Max tokens", self.max_tokens), ("Temp.", self.temperature),
                              ("Top-p", self.top_p), ("Top-k", self.top_k)):
            row1.addWidget(QLabel(label))
            row1.addWidget(widget)
        form.addRow(row1)
        row2 = QHBoxLayout()
        for label, widget in (("Seed", self.seed), ("Presence", self.presence_penalty),
                              ("Frequency", self.frequency_penalty)):
            row2.addWidget(QLabel(label))
            row2.addWidget(widget)
        row2.addWidget(self.think)
        form.addRow(row2)
        form.addRow("Stop", self.stops)
        form.addRow("", self.private)
        what_if = QHBoxLayout()
        for what in (self.assume_free, self.free_gib, self.assume_temperature,
                     self.gpu_temperature):
            what_if.addWidget(what)
        what_if.addStretch(1)
        form.addRow("What-if", what_if)
        buttons = QHBoxLayout()
        for b in (self.send_button, self.stop_button, self.regenerate_button, self.clear_button,
                  self.route_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        files = QHBoxLayout()
        for w in (self.save_button, self.open_button, self.export_button, self.recent_box,
                  self.forget_button):
            files.addWidget(w)
        files.addStretch(1)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.system)
        left_layout.addWidget(self.prompt, 2)
        left_layout.addWidget(self.tokens_label)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addLayout(files)
        left_layout.addWidget(self.keep_recent)
        left_layout.addWidget(self.file_status)
        left_layout.addWidget(QLabel("Router"))
        left_layout.addWidget(self.explanation, 2)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.transcript)
        right.addWidget(self.thinking)
        right.addWidget(self.answer)
        right.setSizes([420, 60, 160])
        right_box = QWidget()
        right_layout = QVBoxLayout(right_box)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.demo_notice)
        conversation_box = QWidget()
        conversation_layout = QVBoxLayout(conversation_box)
        conversation_layout.setContentsMargins(0, 0, 0, 0)
        conversation_layout.addWidget(right, 1)
        conversation_layout.addWidget(self.stats)
        self.feedback_bar = FeedbackBar(self._backend)  # routing feedback, after a routed reply
        conversation_layout.addWidget(self.feedback_bar)
        self.views.addTab(conversation_box, "Conversation")
        self.views.addTab(self.side_by_side, "Side by side")
        right_layout.addWidget(self.views, 1)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right_box)
        split.setSizes([430, 600])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

    def _connect(self) -> None:
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.route_button.clicked.connect(self.route_only)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.clear_button.clicked.connect(self.clear)
        self.save_button.clicked.connect(self._choose_save)
        self.open_button.clicked.connect(self._choose_open)
        self.export_button.clicked.connect(self._choose_export)
        self.keep_recent.toggled.connect(self._on_keep_recent)
        self.forget_button.clicked.connect(self.forget_recent)
        self.recent_box.activated.connect(self._open_recent)
        self.transcript.anchorClicked.connect(self._on_link)
        self.model.currentIndexChanged.connect(self._on_model_changed)
        self.prompt.submitted.connect(self.send)
        self.prompt.cancelled.connect(self.stop)
        for signal in (self.prompt.textChanged, self.system.textChanged):
            signal.connect(self._count_timer.start)
        self.think.toggled.connect(lambda _on: self._count_timer.start())
        QShortcut(QKeySequence("Ctrl+Return"), self, self.send)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.send)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    # -- settings ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def sampling(self) -> Sampling:
        """The knobs as the next request will use them."""
        seed = self.seed.value()
        return Sampling(
            temperature=self.temperature.value(), top_p=self.top_p.value(),
            top_k=self.top_k.value(), max_tokens=self.max_tokens.value(),
            stop=parse_stops(self.stops.text()), seed=None if seed < 0 else seed,
            presence_penalty=self.presence_penalty.value(),
            frequency_penalty=self.frequency_penalty.value(), thinking=self._thinking())

    def _thinking(self) -> bool | None:
        state = self.think.checkState()
        if state == Qt.CheckState.PartiallyChecked:
            return None  # Auto: the chosen model's own default
        return state == Qt.CheckState.Checked

    def _on_model_changed(self) -> None:
        """The Think toggle follows the catalog's mode: thinking models always think, instruct
        models never do, Qwen3 hybrids ("base") may (on by default, like Qwen's template)."""
        model = self.model.currentData()
        self.think.setTristate(model is None)
        if model is None:
            self.think.setCheckState(Qt.CheckState.PartiallyChecked)
            self.think.setEnabled(False)
            self.think.setToolTip("Auto: the chosen model's default (thinking and hybrid "
                                  "models think, instruct models do not)")
        else:
            mode = self._backend.thinking_mode(model)
            self.think.setChecked(mode != "instruct")
            self.think.setEnabled(mode == "base")
            self.think.setToolTip({"thinking": "This model always thinks",
                                   "instruct": "This model does not think",
                                   }.get(mode, "Qwen3 hybrid: think before answering"))
        self._count_timer.start()

    def refresh_models(self) -> None:
        """(Re)list Auto and the models usable here, keeping the choice when it still is."""
        current = self.model.currentData()
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItem("Auto (router)", None)
        for name in self._backend.model_choices():
            self.model.addItem(name, name)
        self.model.setCurrentIndex(max(0, self.model.findData(current)))
        self.model.blockSignals(False)

    def _apply_settings(self, c: Conversation) -> None:
        s = c.sampling
        self.system.setPlainText(c.system)
        index = self.model.findData(c.model)
        if index < 0:
            self.refresh_models()
            index = self.model.findData(c.model)
        self.model.setCurrentIndex(max(0, index))
        self.task_type.setCurrentText(c.task_type)
        self.private.setChecked(c.private)
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.top_k.setValue(s.top_k)
        self.max_tokens.setValue(s.max_tokens)
        self.seed.setValue(-1 if s.seed is None else s.seed)
        self.presence_penalty.setValue(s.presence_penalty)
        self.frequency_penalty.setValue(s.frequency_penalty)
        self.stops.setText(" | ".join(x.replace("\n", "\\n") for x in s.stop))
        if s.thinking is not None and self.think.isEnabled():
            self.think.setChecked(s.thinking)

    def _sync_conversation(self) -> None:
        c = self.conversation
        c.system = self.system.toPlainText()
        c.sampling = self.sampling()
        c.model = self.model.currentData()
        c.task_type = self.task_type.currentText()
        c.private = self.private.isChecked()

    # -- the conversation ----------------------------------------------------------------------

    def send(self) -> None:
        """Send the prompt as the next user turn (or as the edited turn) and stream the reply."""
        text = self.prompt.toPlainText().strip()
        if self.busy or not text:
            return
        if self._edit_index is not None:
            self.conversation.edit(self._edit_index, text)
            self._edit_index = None
        else:
            if self.conversation.pending:  # a stopped or failed reply: ask afresh
                self.conversation.turns.pop()
            self.conversation.ask(text)
        self.prompt.clear()
        self._start_reply()

    def single_request(self, request_id: str) -> GenerationRequest | None:
        """The prompt box alone (after the system prompt) with the current settings: what side
        by side sends to each model. None when the prompt is empty."""
        text = self.prompt.toPlainText().strip()
        if not text:
            return None
        one = Conversation(self.system.toPlainText(), sampling=self.sampling())
        one.ask(text)
        return one.request(request_id)

    def regenerate(self) -> None:
        """Answer the last user turn again (its reply is replaced)."""
        if self.busy or not self.conversation.turns:
            return
        self.conversation.regenerate()
        self._start_reply()

    def edit_turn(self, index: int) -> None:
        """Put user turn `index` back in the editor; Send replaces it and what followed."""
        if self.busy:
            return
        self._edit_index = index
        self.prompt.setPlainText(self.conversation.turns[index].user)
        self.stats.setText(f"editing turn {index + 1}: Send replaces it and the turns after it")
        self.prompt.setFocus()

    def clear(self) -> None:
        if self.busy:
            return
        self.conversation = Conversation()
        self._sync_conversation()
        self._edit_index = None
        self._expanded.clear()
        self.answer.clear()
        self.thinking.clear()
        self.stats.setText("")
        self.render_transcript()
        self._count_timer.start()

    def _start_reply(self) -> None:
        self._sync_conversation()
        self._request_id = f"playground-{uuid.uuid4().hex[:12]}"
        request = self.conversation.request(self._request_id)
        if self.conversation.system != self._shown_system:
            self.render_transcript()
        else:
            self.show_turn(len(self.conversation.turns) - 1)
        self.answer.clear()
        self.thinking.clear()
        self.stats.setText("waiting for the model…")
        self._set_busy(True)
        self.request_sent.emit(request)
        self._task = asyncio.ensure_future(self._stream(request))

    def _set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        for b in (self.regenerate_button, self.clear_button, self.open_button):
            b.setEnabled(not busy)

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
        thinking: list[str] = []
        text: list[str] = []
        decision_before = self._backend.last_decision
        model: str | None = self.conversation.model
        # Deltas arrive hundreds a second: the panes are updated at most once a frame, so the
        # loop keeps time for typing however fast the model writes.
        shown = [0, 0]  # pieces of thinking and of text already in the panes
        flushed = 0.0

        def flush(delta: GenerationDelta) -> None:
            if len(thinking) > shown[0]:
                self._append(self.thinking, "".join(thinking[shown[0]:]))
                shown[0] = len(thinking)
            if len(text) > shown[1]:
                self._append(self.answer, "".join(text[shown[1]:]))
                shown[1] = len(text)
            self.stats.setText(self._format_stats(delta))

        try:
            stream = self._backend.generate(
                request, self.model.currentData(), self.task_type.currentText(),
                self.private.isChecked())
            async for delta in stream:
                if last is None:
                    model = self._backend.active_model() or model
                    self.update_context()
                if delta.thinking:
                    thinking.append(delta.thinking)
                if delta.text:
                    text.append(delta.text)
                last = delta
                if delta.finished or time.monotonic() - flushed >= FRAME_S:
                    flush(delta)
                    flushed = time.monotonic()
            if isinstance(last, GenerationDelta):
                flush(last)  # a stream that ended without a finished delta
        except asyncio.CancelledError:
            if isinstance(last, GenerationDelta):
                flush(last)
            self.stats.setText(self.stats.text() + "  (stopped)")
            if self._request_id:
                await self._backend.abort(self._request_id)
        except Exception as exc:  # noqa: BLE001 - any failure is shown, and the UI restored
            if isinstance(last, GenerationDelta):
                flush(last)
            last = exc
            self.stats.setText(f"error: {exc}")
            self.event_line.emit("error", f"generation failed: {exc}")
        finally:
            self._set_busy(False)
            self.update_context()
            if isinstance(last, GenerationDelta) and self.conversation.pending:
                decision = self._backend.last_decision
                routed = (decision.as_dict() if self.conversation.model is None
                          and decision is not None and decision is not decision_before
                          else None)
                reply = Reply("".join(text), "".join(thinking), model, last.tokens,
                              last.prompt_tokens, last.first_token_s, last.tokens_per_s,
                              last.elapsed_s, last.finish_reason or (
                                  "abort" if not last.finished else None),
                              routed, self.conversation.sampling)
                self.conversation.finish(reply)
                self.show_turn(len(self.conversation.turns) - 1)
                if self._recent is not None and self._recent.remember(self.conversation):
                    self._refresh_recent()
                self.reply_finished.emit(len(self.conversation.turns) - 1, reply)
            self._count_timer.start()
            self.feedback_bar.show_for(request.request_id)
            self.generation_finished.emit(last)

    # -- the transcript ------------------------------------------------------------------------

    def _turn_markdown(self, index: int) -> str:
        turn = self.conversation.turns[index]
        lines = [f"**You** · [edit](edit:{index})", "", _quote(turn.user), ""]
        r = turn.reply
        if r is not None:
            lines += [f"**Assistant** · {reply_stats(r)} · [copy](copy:{index})", ""]
            if r.thinking:
                if index in self._expanded:
                    lines += [f"[▾ hide thinking](fold:{index})", "", _quote(r.thinking), ""]
                else:
                    lines += [f"[▸ thinking ({len(r.thinking)} characters)](fold:{index})",
                              ""]
            lines += [r.text or "*(no text)*", "", "---", ""]
        return "\n".join(lines)

    def render_transcript(self) -> None:
        """Render the whole transcript (a fold, an open, a new system prompt)."""
        self._shown_system = self.conversation.system
        self.transcript.clear()
        self._turn_start.clear()
        if self.conversation.system.strip():
            cursor = QTextCursor(self.transcript.document())
            cursor.insertMarkdown(f"*System:* {self.conversation.system}\n\n---\n")
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertBlock()
        for index in range(len(self.conversation.turns)):
            self.show_turn(index)
        self._scroll_to_end()

    def show_turn(self, index: int) -> None:
        """Show turn `index` as it is now, in place of what the transcript showed from that turn
        on (a finished reply, a new, edited or regenerated turn). Where each turn starts is kept,
        so nothing before it is touched or searched: a long transcript costs nothing per reply."""
        cursor = QTextCursor(self.transcript.document())
        start = self._turn_start.get(index)
        if start is not None:
            cursor.setPosition(start)
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()
            for later in [i for i in self._turn_start if i > index]:
                del self._turn_start[later]
        elif index == len(self._turn_start):
            cursor.movePosition(QTextCursor.MoveOperation.End)
        else:
            self.render_transcript()
            return
        self._turn_start[index] = cursor.position()
        cursor.insertMarkdown(self._turn_markdown(index))
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertBlock()  # the next turn starts in a block of its own
        self._scroll_to_end()

    def _scroll_to_end(self) -> None:
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_link(self, url: QUrl) -> None:
        kind, _sep, number = url.toString().partition(":")
        if not number.isdigit() or int(number) >= len(self.conversation.turns):
            return
        index = int(number)
        if kind == "copy":
            self.copy_reply(index)
        elif kind == "edit":
            self.edit_turn(index)
        elif kind == "fold":
            self._expanded ^= {index}
            self.render_transcript()

    def copy_reply(self, index: int) -> None:
        reply = self.conversation.turns[index].reply
        if reply is not None:
            QGuiApplication.clipboard().setText(reply.text)
            self.stats.setText(f"reply {index + 1} copied")

    # -- files ---------------------------------------------------------------------------------

    def save_to(self, path: Path) -> bool:
        self._sync_conversation()
        try:
            self.conversation.save(path)
        except ConversationFileError as exc:
            return self._file_error(f"Not saved: {exc}")
        self._file_ok(f"Saved to {path}")
        return True

    def open_from(self, path: Path) -> bool:
        """Open a saved conversation; a bad file is named and the current one kept."""
        if self.busy:
            return False
        try:
            conversation = Conversation.load(path)
        except ConversationFileError as exc:
            return self._file_error(f"Not opened: {exc}")
        self._show_conversation(conversation)
        self._file_ok(f"Opened {path}")
        return True

    def export_markdown(self, path: Path) -> bool:
        self._sync_conversation()
        try:
            path.write_text(self.conversation.to_markdown(), encoding="utf-8")
        except OSError as exc:
            return self._file_error(f"Not exported: {path}: {exc.strerror}")
        self._file_ok(f"Exported to {path}")
        return True

    def _show_conversation(self, conversation: Conversation) -> None:
        self._apply_settings(conversation)
        self.conversation = conversation
        self._edit_index = None
        self._expanded.clear()
        self.answer.clear()
        self.thinking.clear()
        last = conversation.turns[-1].reply if conversation.turns else None
        self.stats.setText(reply_stats(last) if last is not None else "")
        self.render_transcript()

    def _file_error(self, text: str) -> bool:
        self.file_status.setStyleSheet("QLabel { color: #b02a37; }")
        self.file_status.setText(text)
        self.event_line.emit("error", text)
        return False

    def _file_ok(self, text: str) -> None:
        self.file_status.setStyleSheet("")
        self.file_status.setText(text)

    def _choose_save(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save conversation", "conversation.json",
                                              "Conversation (*.json)")
        if name:
            self.save_to(Path(name))

    def _choose_open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Open conversation", "",
                                              "Conversation (*.json)")
        if name:
            self.open_from(Path(name))

    def _choose_export(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export as Markdown", "conversation.md",
                                              "Markdown (*.md)")
        if name:
            self.export_markdown(Path(name))

    # -- recent runs ---------------------------------------------------------------------------

    def _load_recent_settings(self) -> None:
        available = self._recent is not None
        for w in (self.keep_recent, self.recent_box, self.forget_button):
            w.setVisible(available)
        if self._recent is None:
            return
        self.keep_recent.setChecked(self._recent.enabled)
        if self._recent.problem:
            self._file_error(self._recent.problem)
        self._refresh_recent()

    def _on_keep_recent(self, on: bool) -> None:
        if self._recent is not None and on != self._recent.enabled:
            self._recent.set_enabled(on)
            if on and self.conversation.turns and not self.conversation.pending:
                self._recent.remember(self.conversation)
            self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_box.clear()
        runs = self._recent.runs() if self._recent is not None else []
        for run in runs:
            self.recent_box.addItem(run.title, run.id)
        self.recent_box.setEnabled(bool(runs))
        self.forget_button.setEnabled(bool(runs))

    def _open_recent(self, index: int) -> None:
        if self._recent is None or self.busy:
            return
        wanted = self.recent_box.itemData(index)
        for run in self._recent.runs():
            if run.id == wanted:
                self._show_conversation(run.conversation)
                self._file_ok(f"Opened the recent run “{run.title}”")

    def forget_recent(self) -> None:
        """Delete every kept run from this computer."""
        if self._recent is not None:
            self._recent.forget()
            self._refresh_recent()
            self._file_ok("Recent runs forgotten")

    # -- the prompt's token count --------------------------------------------------------------

    def _count_model(self) -> str | None:
        return self.model.currentData() or self._backend.active_model()

    def _start_count(self) -> None:
        if self._closed:
            return  # a reply cancelled by the shutdown asks for a count: none after it
        if self._count_task is not None and not self._count_task.done():
            self._count_timer.start()  # one count at a time; the newest text follows it
            return
        self._count_serial += 1
        with contextlib.suppress(RuntimeError):  # no running loop (a bare widget test)
            self._count_task = asyncio.ensure_future(self._count(self._count_serial))

    async def _count(self, serial: int) -> None:
        model = self._count_model()
        if model is None:
            self.tokens_label.setText("Prompt tokens: counted once a model is chosen "
                                      "(Auto picks when you send)")
            return
        context = self._backend.model_context(model)
        folder = self._backend.tokenizer_dir(model)
        limit = f" of {context:,} (context of {model})" if context else f" ({model})"
        if folder is None:
            self.tokens_label.setText(f"Prompt tokens: unknown{limit}: not on disk")
            return
        self._sync_conversation()
        draft = self.prompt.toPlainText()
        before = self.conversation.turns[:self._edit_index]  # all of them unless editing
        if before and before[-1].reply is None:
            before = before[:-1]  # a stopped turn is asked afresh
        messages = Conversation(self.conversation.system, before).messages(draft)
        if self._count_pool is None:
            self._count_pool = ThreadPoolExecutor(1, thread_name_prefix="prompt-count")
        self._count_future = self._count_pool.submit(self._counter.count, folder, messages,
                                                     self._thinking())
        try:
            n = await asyncio.wrap_future(self._count_future)
        except Exception as exc:  # noqa: BLE001 - a tokenizer that fails: said, not fatal
            self.tokens_label.setText(f"Prompt tokens: cannot count ({exc})")
            return
        if serial == self._count_serial:
            over = context is not None and n >= context
            self.tokens_label.setText(f"Prompt tokens: {n:,}{limit}"
                                      + ("  — too long" if over else ""))
            self.tokens_label.setStyleSheet("QLabel { color: #b02a37; }" if over else "")

    # -- status ------------------------------------------------------------------------------

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

    async def wait_idle(self) -> None:
        """Return once no reply is streaming (a stopped one has unwound)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def shutdown(self) -> None:
        """Cancel a running stream and a count, wait for them to unwind, end the count thread."""
        self._closed = True
        self._count_timer.stop()
        await self.side_by_side.shutdown()
        for task in (self._task, self._count_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._count_pool is not None:
            # A count already running (a tokenizer loading) cannot be interrupted: give it a
            # moment to end, so its thread does not outlive the panel.
            running = self._count_future
            if running is not None and not running.done():
                await asyncio.wait({asyncio.wrap_future(running)}, timeout=COUNT_GRACE_S)
            self._count_pool.shutdown(wait=False, cancel_futures=True)
            self._count_pool = None


def _double(low: float, high: float, value: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setValue(value)
    return box


def _quote(text: str) -> str:
    """User text and thinking shown as Markdown block quotes (their Markdown still renders)."""
    return "\n".join("> " + line for line in text.splitlines()) or "> "
