"""`python -m gui.soak_png FOLDER`: draw a saved soak run's charts into FOLDER/charts.png.

The headless `vrampilot soak` runs this in a child process (offscreen Qt), so core stays Qt-free.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from core.facade import CHART_FILE, load_run
from gui.soak_view import SoakCharts


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m gui.soak_png FOLDER\n")
        return 2
    try:
        run = load_run(argv[0])
    except ValueError as exc:
        sys.stderr.write(f"gui.soak_png: {exc}\n")
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    charts = SoakCharts()
    charts.resize(1000, 1100)
    charts.show_runs([(run.label, run.series)])
    charts.show()
    app.processEvents()
    charts.export_png(Path(run.folder) / CHART_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
