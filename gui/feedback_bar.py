"""The routing feedback bar under a reply: was the router's model right? "Good", or "Wrong model"
with the model that should have answered. Shown only for replies the router decided (and only
while `performance_tracking.track_routing` is on); the verdict is stored on the logged request."""

from __future__ import annotations

import sqlite3
from typing import Protocol

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from core.facade import RoutedRequest


class FeedbackBackend(Protocol):
    """What the bar needs (core.chat_session.ChatSession has it)."""

    def routed_request(self, request_id: str) -> RoutedRequest | None: ...

    def give_feedback(self, request_id: str, verdict: str,
                      wanted_model: str | None = None) -> RoutedRequest: ...

    def feedback_models(self) -> list[str]: ...


class FeedbackBar(QWidget):
    """`show_for(request_id)` after a reply; `feedback_given` carries the updated request."""

    feedback_given = Signal(object)  # RoutedRequest

    def __init__(self, backend: FeedbackBackend, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._backend = backend
        self.request: RoutedRequest | None = None
        self.question = QLabel("")
        self.good_button = QPushButton("Good")
        self.good_button.setToolTip("The router chose the right model for this prompt")
        self.wanted = QComboBox()
        self.wanted.setEditable(True)  # any catalog id, also one not on this machine
        self.wanted.setToolTip("The model that should have answered")
        self.wrong_button = QPushButton("Wrong model")
        self.wrong_button.setToolTip("Record that the model chosen in the box should have "
                                     "answered instead")
        self.status = QLabel("")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.question)
        layout.addWidget(self.good_button)
        layout.addWidget(QLabel("should have been"))
        layout.addWidget(self.wanted, 1)
        layout.addWidget(self.wrong_button)
        layout.addWidget(self.status, 1)
        self.good_button.clicked.connect(lambda: self._give("good"))
        self.wrong_button.clicked.connect(
            lambda: self._give("wrong_model", self.wanted.currentText().strip()))
        self.setVisible(False)

    def show_for(self, request_id: str) -> bool:
        """Offer feedback on this reply when the router decided it; hides the bar otherwise."""
        try:
            request = self._backend.routed_request(request_id)
        except sqlite3.Error:  # the app is closing and its history with it: nothing to offer
            request = None
        self.request = request
        if request is None:
            self.setVisible(False)
            return False
        judged = request.judged_model or "no model"
        self.question.setText(f"Router chose {judged}: right model?")
        choices = [m for m in self._backend.feedback_models() if m != request.judged_model]
        self.wanted.clear()
        self.wanted.addItems(choices)
        self.status.setText("")
        self._enable(True)
        self.setVisible(True)
        return True

    def _give(self, verdict: str, wanted: str | None = None) -> None:
        if self.request is None:
            return
        try:
            updated = self._backend.give_feedback(self.request.request_id, verdict, wanted)
        except ValueError as exc:  # FeedbackError: one sentence, the bar stays usable
            self.status.setText(f"Not recorded: {exc}")
            return
        self.request = updated
        self.status.setText("Recorded: good" if verdict == "good"
                            else f"Recorded: {updated.wanted_model} should have answered")
        self._enable(False)
        self.feedback_given.emit(updated)

    def _enable(self, on: bool) -> None:
        for widget in (self.good_button, self.wrong_button, self.wanted):
            widget.setEnabled(on)
