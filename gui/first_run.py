"""On a machine without an NVIDIA GPU: say so once, and offer the simulated RTX 4090 Laptop in
one click (the app starts again with --simulate; the CPU engine still runs the models)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

SIMULATED_PROFILE = "rtx4090-laptop"
SEEN_KEY = "first_run/no_gpu_answered"  # QSettings: the question was answered, do not ask again
TEXT = ("No NVIDIA GPU found: models run on the CPU and the Monitor shows host memory only. "
        "To see what vrampilot does on a laptop GPU, start it on the simulated "
        "RTX 4090 Laptop (temperature, power and VRAM are simulated; the models still run on "
        "the CPU).")


class NoGpuBanner(QFrame):
    """The offer, above the Monitor's charts; answered either way, it is not shown again."""

    def __init__(self, simulate: Callable[[], object], settings: QSettings | None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("no-gpu-banner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._settings = settings
        self.text = QLabel(TEXT)
        self.text.setWordWrap(True)
        self.simulate_button = QPushButton("Use the simulated RTX 4090 Laptop")
        self.keep_button = QPushButton("Keep the CPU")
        self._simulate = simulate
        self.simulate_button.clicked.connect(self._take_simulated)
        self.keep_button.clicked.connect(self._answered)
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.simulate_button)
        layout.addWidget(self.keep_button)

    @staticmethod
    def wanted(has_gpu: bool, simulated: bool, settings: QSettings | None) -> bool:
        answered = settings is not None and bool(settings.value(SEEN_KEY, False, type=bool))
        return not has_gpu and not simulated and not answered

    def _take_simulated(self) -> None:
        self._answered()
        self._simulate()

    def _answered(self) -> None:
        if self._settings is not None:
            self._settings.setValue(SEEN_KEY, True)
            self._settings.sync()
        self.hide()


def relaunch_command(config: str | None) -> list[str]:
    """The app again, on the simulated card (with the same --config)."""
    command = [sys.executable, "-m", "gui.launcher", "--simulate", SIMULATED_PROFILE]
    return command + (["--config", config] if config else [])


def relaunch(command: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start the new app on its own (it outlives this one), once this one released its lock."""
    return subprocess.Popen(list(command), start_new_session=True, stdin=subprocess.DEVNULL)
