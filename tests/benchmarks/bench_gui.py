"""GUI benchmark: event-loop lag while streaming from the engine, and the cost of one redraw.

Not run by pytest. Run it directly (``.venv/bin/python -m tests.benchmarks.bench_gui``) or import
``run()`` from a bench runner. Targets (issue 6): event-loop lag p99 under 16 ms and max under
50 ms while streaming from the engine, sampling at 10 Hz and showing the 60-minute window; one
redraw of all charts with a full hour of 10 Hz data under 10 ms (issue 14: under 8 ms with the
time axis moving); window shown within 2 s of launch (model loading not counted); issue 14:
within 1 s, and the loop's worst stall during the first load's vLLM import under 100 ms.

Lag: a 5 ms ticker on the app's qasync loop records how late each tick wakes up. It runs on the
whole app (AppController on the simulated RTX 4090 Laptop, sampler at 10 Hz, the history pre-filled
with an hour of 10 Hz data, 60-minute window shown): idle (the baseline), during the process's
first load of demo-tiny-a on the real vLLM CPU engine (vLLM's import, then the engine's start),
and while the playground streams from it.
Redraw: all charts get a new row (so every curve is handed new data) and are painted
synchronously; the figure is data update + paint. Offscreen platform (no display needed).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

Figure = dict[str, Any]
TICK_S = 0.005
HOUR_ROWS = 36_000


def _figure(values: list[float], unit: str) -> Figure:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "unit": unit}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def fill_hour(history: Any, metrics: list[str], end: float, hz: float = 10.0) -> None:
    """An hour of plausible, varying 10 Hz data ending at `end` (so downsampling has work)."""
    rng = np.random.default_rng(0)
    n = HOUR_ROWS
    t = end - (n - 1) / hz + np.arange(n) / hz
    base = {m: 50 + 30 * np.sin(np.arange(n) / 900.0) + rng.normal(0, 2, n) for m in metrics}
    for i in range(n):
        history.append_values(float(t[i]), {m: float(v[i]) for m, v in base.items()})


def _config_file(folder: Path) -> Path:
    path = folder / "bench.yaml"
    # demo-tiny-a gets its model's full context, so a long conversation fits its prompt. Advise
    # only: the simulated card heats under the streaming, and a thermal step-down (which would
    # unload the model mid-measurement) is the policy's business, not the GUI's lag.
    path.write_text("hardware_monitoring:\n  interval_seconds: 0.1\n  policy: advise\n"
                    "models:\n  demo-tiny-a: {default_context: 4096}\n")
    return path


TURN = ("Here is step {i} of the plan, with a table and some code.\n\n"
        "| step | what | cost |\n|---|---|---|\n| {i} | migrate **data** | low |\n\n"
        "```python\ndef step_{i}(rows):\n    return [r for r in rows if r.ok]\n```\n")


def long_conversation(model_dir: Path, max_prompt_tokens: int = 3000) -> Any:
    """A conversation of Markdown replies (tables, code) as long as demo-tiny-a's context
    allows: the transcript on screen while the reply to its last turn streams."""
    from core.conversation import Conversation, Reply
    from core.prompt_tokens import PromptCounter

    counter = PromptCounter()
    c = Conversation(model="demo-tiny-a")
    for i in range(400):
        c.ask(f"What is step {i}?")
        c.finish(Reply(TURN.format(i=i), thinking="Reasoning. " * 20, model="demo-tiny-a",
                       tokens=60))
        if counter.count(model_dir, c.messages("Write a long story.")) > max_prompt_tokens:
            c.turns.pop()  # the prompt must leave room for the reply in the context
            break
    c.ask("Write a long story.")
    return c


async def _ticker(seconds: float) -> list[float]:
    """How late (ms) each 5 ms sleep wakes up, for `seconds`."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(max(0.0, (time.perf_counter() - t0 - TICK_S) * 1000))
    return lags


async def _lags_during(work: Any) -> tuple[Any, list[float]]:
    """The awaitable's result, and how late (ms) each 5 ms sleep woke up while it ran."""
    task = asyncio.ensure_future(work)
    lags: list[float] = []
    while not task.done():
        t0 = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(max(0.0, (time.perf_counter() - t0 - TICK_S) * 1000))
    return task.result(), lags


def _lag_figures(prefix: str, lags: list[float]) -> dict[str, Figure]:
    return {
        f"{prefix}_p50": _figure([_percentile(lags, 50)], "ms"),
        f"{prefix}_p99": _figure([_percentile(lags, 99)], "ms"),
        f"{prefix}_max": _figure([max(lags)], "ms"),
        f"{prefix}_ticks": _figure([float(len(lags))], "ticks"),
    }


def event_loop_lag(seconds: float = 10.0, stream: bool = True,
                   long_transcript: bool = True) -> dict[str, Figure]:
    """Lag figures for the idle app and (stream=True) the app streaming from demo-tiny-a; with
    long_transcript, also the playground on screen with a long Markdown transcript while its
    last reply streams and text is typed into the prompt box."""
    from PySide6.QtWidgets import QApplication

    from core.engine.demo_model import ensure_demo_models
    from core.runtime import Runtime
    from gui.app import AppController
    from gui.event_loop import AppEventLoop

    figures: dict[str, Figure] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VRAMPILOT_DATA_DIR"] = tmp
        app = QApplication.instance() or QApplication([])
        assert isinstance(app, QApplication)
        app.setQuitOnLastWindowClosed(False)
        loop = AppEventLoop(app)
        asyncio.set_event_loop(loop)
        runtime = Runtime.create(config_file=_config_file(Path(tmp)), simulate="rtx4090-laptop",
                                 history_path=Path(tmp) / "history.sqlite3")
        first = runtime.sampler.sample_once()
        from core.telemetry.history import TelemetryHistory, sample_metrics

        # A fresh history: the one the runtime made already holds its first samples, and rows
        # older than those would be clamped to their time (an hour of rows at one instant).
        history = TelemetryHistory(runtime.history.capacity)
        fill_hour(history, list(sample_metrics(first)), time.time())
        runtime.sampler.history = history
        controller = AppController(runtime, settings=None, tray=False)
        controller.window.resize(1280, 860)

        async def body() -> None:
            controller.start(autoload=False)
            controller.charts.window_box.setCurrentIndex(3)  # 60 min
            await asyncio.sleep(1.0)  # settle
            figures.update(_lag_figures("baseline_idle_lag", await _ticker(seconds)))
            if stream:
                await loop.run_in_executor(None, ensure_demo_models)
                # The process's first load: vLLM's import, then the engine's start.
                result, lags = await _lags_during(runtime.manager.switch_to("demo-tiny-a"))
                assert result.ok, result.errors
                figures.update(_lag_figures("first_load_lag", lags))
                pg = controller.playground
                pg.refresh_models()  # the demo models were built after the window
                pg.model.setCurrentIndex(pg.model.findData("demo-tiny-a"))
                pg.max_tokens.setValue(900)
                pg.temperature.setValue(1.0)
                pg.prompt.setPlainText("Write a long story.")
                controller.window.tabs.setCurrentIndex(0)  # the charts are what is painted

                async def keep_streaming() -> None:
                    # The same one-turn prompt again and again (a conversation would grow).
                    pg.send()
                    while True:
                        if not pg.busy:
                            pg.regenerate()
                        await asyncio.sleep(0.05)

                streamer = asyncio.ensure_future(keep_streaming())
                await asyncio.sleep(1.0)  # first tokens flowing
                lags = await _ticker(seconds)
                streamer.cancel()
                pg.stop()
                figures.update(_lag_figures("streaming_lag", lags))
                if long_transcript:
                    figures.update(await _long_transcript_lag(controller, seconds))
            controller.window.close()
            await controller.finished.wait()

        with loop:
            loop.run_until_complete(body())
        asyncio.set_event_loop(None)
    return figures


async def _long_transcript_lag(controller: Any, seconds: float) -> dict[str, Figure]:
    """The playground tab shown with a long transcript; the last turn's reply regenerated over
    and over (the prompt stays the same) while a key is typed into the prompt box every 50 ms."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    pg = controller.playground
    await pg.wait_idle()
    model_dir = controller.runtime.chat.tokenizer_dir("demo-tiny-a")
    conversation = await asyncio.get_running_loop().run_in_executor(
        None, long_conversation, model_dir)
    conversation.sampling = pg.sampling()
    conversation.turns.pop()  # shown finished, then the last turn is asked again below
    pg._show_conversation(conversation)
    pg.max_tokens.setValue(900)
    pg.temperature.setValue(1.0)
    controller.window.tabs.setCurrentWidget(pg)
    pg.prompt.setFocus()
    pg.prompt.setPlainText("Write a long story.")
    pg.send()

    async def keep_streaming() -> None:
        while True:
            if not pg.busy:
                pg.regenerate()
            await asyncio.sleep(0.05)

    async def keep_typing() -> None:
        while True:
            QTest.keyClick(pg.prompt, Qt.Key.Key_A)
            if len(pg.prompt.toPlainText()) > 400:
                pg.prompt.clear()
            await asyncio.sleep(0.05)

    streamed: list[int] = []
    pg.generation_finished.connect(
        lambda last: streamed.append(getattr(last, "tokens", 0)))
    streamer = asyncio.ensure_future(keep_streaming())
    await asyncio.sleep(1.0)
    typist = asyncio.ensure_future(keep_typing())
    lags = await _ticker(seconds)
    streamer.cancel()
    typist.cancel()
    pg.stop()
    await pg.wait_idle()
    if sum(streamed) == 0:  # measured nothing streaming: say so, loudly
        raise RuntimeError(f"the long-transcript reply did not stream: {pg.stats.text()}; "
                           f"{controller.events.event_log.toPlainText()[-600:]}")
    out = _lag_figures("long_transcript_streaming_typing_lag", lags)
    out["long_transcript_tokens_streamed"] = _figure([float(sum(streamed))], "tokens")
    out["long_transcript_turns"] = _figure([float(len(pg.conversation.turns))], "turns")
    out["long_transcript_chars"] = _figure(
        [float(len(pg.transcript.toPlainText()))], "chars")
    return out


def redraw_ms(repeats: int = 30, row_step_s: float = 0.1, new_rows: bool = True,
              clock: Any = time.perf_counter) -> list[float]:
    """One redraw of all charts (new row for every curve, then a synchronous paint), with a
    model-switch line and an open alert period drawn as in the app. row_step_s: time between
    the rows added; 0.1 is the 10 Hz sampler (the time axis moves one pixel every ~3 s of the
    60-minute window), 4.0 makes every redraw move the time axis (the worst case).
    new_rows=False: the same frame with nothing new (redraw returns at once, the paint remains):
    the baseline, what painting the charts costs by itself. clock=time.thread_time: the GUI
    thread's CPU time instead of the wall clock (steadier on a shared machine)."""
    from PySide6.QtWidgets import QApplication

    from core.telemetry.history import TelemetryHistory
    from gui.app import chart_specs
    from gui.charts import ChartPanel

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VRAMPILOT_DATA_DIR"] = tmp
        from core.runtime import Runtime

        runtime = Runtime.create(simulate="rtx4090-laptop", history_path=Path(tmp) / "h.db")
        specs = chart_specs(runtime)
        metrics = [m for s in specs for m in s.metrics]
        history = TelemetryHistory(HOUR_ROWS)
        now = time.time()
        fill_hour(history, metrics, now)
        panel = ChartPanel(history, specs)
        panel.annotations.switch(now - 1000, "demo-tiny-a")
        panel.annotations.alert_changed(specs[1].alert_metrics[0], "warning", "started",
                                         now - 500, now - 500)
        panel.resize(1280, 800)
        panel.show()
        panel.set_window(3600)
        app.processEvents()
        out = []
        for i in range(repeats):
            if new_rows:
                history.append_values(now + (i + 1) * row_step_s, {m: 50.0 + i for m in metrics})
            t0 = clock()
            panel.redraw()
            panel.graphics.viewport().repaint()
            out.append((clock() - t0) * 1000)
        panel.close()
        runtime.history_store.close()
    return out


def gpu_panel_refresh_ms(repeats: int = 200) -> dict[str, Figure]:
    """The Monitor's GPU header and process table (three processes) redrawn for a new sample,
    against the same refresh when the sample was already shown (its 1 Hz timer's idle cost)."""
    import os as _os

    from PySide6.QtWidgets import QApplication

    from core.telemetry.snapshot import GpuProcess, GpuSnapshot, HostSnapshot, Sample
    from gui.gpu_panel import GpuStatusPanel

    app = QApplication.instance() or QApplication([])
    procs = (GpuProcess(_os.getpid(), 3 * 1024**3, "python3", "me", True),
             GpuProcess(1, 512 * 1024**2, "systemd", "root", False),
             GpuProcess(4242, None, "Xorg", "root", False))
    state = {"i": 0}

    def latest() -> Sample:
        i = state["i"]
        host = HostSnapshot(float(i), 16 * 1024**3, 8 * 1024**3, 8 * 1024**3, 0, 0, 10.0)
        gpu = GpuSnapshot(float(i), 0, "GPU", True, 16 * 1024**3, 5 * 1024**3, 11 * 1024**3,
                          sm_clock_mhz=1500 + i % 500, sm_clock_max_mhz=2040,
                          mem_clock_mhz=8001, mem_clock_max_mhz=9001,
                          clock_events=("SwThermal",) if i % 2 else ("Idle",), processes=procs)
        return Sample(host, (gpu,))

    panel = GpuStatusPanel(latest)
    panel.show()
    new, same = [], []
    for i in range(repeats):
        state["i"] = i
        t0 = time.perf_counter()
        panel.refresh()
        panel.repaint()
        new.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        panel.refresh()
        same.append((time.perf_counter() - t0) * 1000)
    app.processEvents()
    panel.close()
    return {"gpu_panel_refresh_new_sample": _figure(new, "ms"),
            "baseline_gpu_panel_refresh_same_sample": _figure(same, "ms")}


def _whole_hour_peaks(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, ...]:
    """The baseline: the whole window bucketed again from its newest end on every frame (how
    the charts decimated before PeakBuckets)."""
    k = len(y) // buckets
    m = (len(y) // k) * k
    head_y = y[len(y) - m:].reshape(-1, k)
    head_x = x[len(y) - m:].reshape(-1, k)
    return head_x[:, 0], head_x[:, -1], head_y.min(axis=1), head_y.max(axis=1)


def decimation_us(frames: int = 2000, buckets: int = 600) -> dict[str, Figure]:
    """One curve's decimation per frame with one new 10 Hz row each frame, an hour shown."""
    from gui.chart_data import PeakBuckets

    n = HOUR_ROWS
    t = 1e6 + np.arange(n + frames) / 10
    v = np.random.default_rng(0).normal(60, 5, n + frames)
    width_s = 3600 / buckets
    peaks = PeakBuckets(width_s)
    peaks.extend(t[:n], v[:n])
    new, whole = [], []
    for i in range(1, frames):
        x, y = t[i:n + i], v[i:n + i]
        t0 = time.perf_counter()
        peaks.extend(t[n + i - 1:n + i], v[n + i - 1:n + i])
        peaks.trim(x[-1] - 3600)
        new.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        _whole_hour_peaks(x, y, buckets)
        whole.append((time.perf_counter() - t0) * 1e6)
    return {"decimate_one_curve_incremental": _figure(new, "us"),
            "baseline_decimate_one_curve_whole_hour": _figure(whole, "us")}


WINDOW_SHOWN_MARKER = "vrampilot: window shown"


def _time_to_line(argv: list[str], marker: str, env: dict[str, str], timeout_s: float = 60.0
                  ) -> float:
    """Seconds from starting `argv` until it prints `marker`; the process is then ended."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if marker in line:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout_s:
                break
        raise RuntimeError(f"{argv} never printed {marker!r} (exit {proc.poll()})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_s(repeats: int = 3) -> dict[str, Figure]:
    """Launch to main window shown: `python -m gui.launcher --simulate rtx4090-laptop
    --no-autoload` (offscreen, a fresh data dir) until the app reports its window's first
    paint done (VRAMPILOT_REPORT_WINDOW_SHOWN); baseline: a bare PySide6 QWidget shown and
    reported the same way."""
    import sys

    # Both report after their window's first paint (a zero timer set at show() fires before it).
    bare = ("from PySide6.QtCore import QTimer\n"
            "from PySide6.QtWidgets import QApplication, QWidget\n"
            "class Window(QWidget):\n"
            "    painted = False\n"
            "    def paintEvent(self, event):\n"
            "        if not self.painted:\n"
            "            self.painted = True\n"
            "            QTimer.singleShot(0, lambda: print(MARKER, flush=True))\n"
            f"MARKER = {WINDOW_SHOWN_MARKER!r}\n"
            "app = QApplication([])\nw = Window()\nw.resize(1280, 860)\nw.show()\n"
            "app.exec()\n")
    app_times: list[float] = []
    bare_times: list[float] = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VRAMPILOT_DATA_DIR=tmp,
                       VRAMPILOT_REPORT_WINDOW_SHOWN="1", PYTHONUNBUFFERED="1")
            bare_times.append(_time_to_line([sys.executable, "-c", bare],
                                            WINDOW_SHOWN_MARKER, env))
            app_times.append(_time_to_line(
                [sys.executable, "-m", "gui.launcher", "--simulate", "rtx4090-laptop",
                 "--no-autoload"], WINDOW_SHOWN_MARKER, env))
    return {"window_shown_after_launch": _figure(app_times, "s"),
            "baseline_bare_qwidget_shown_after_launch": _figure(bare_times, "s")}


def run(lag_seconds: float = 10.0) -> dict[str, Figure]:
    """All figures as {name: {min, median, max, unit}}; baselines are named ``baseline_*``."""
    figures: dict[str, Figure] = {
        "redraw_all_charts_1h_10hz": _figure(redraw_ms(), "ms"),
        "redraw_all_charts_1h_10hz_time_axis_moved": _figure(redraw_ms(row_step_s=4.0), "ms"),
        "baseline_repaint_all_charts_nothing_new": _figure(redraw_ms(new_rows=False), "ms"),
        # The same frames in the GUI thread's CPU time: what the wall clock shows on a quiet
        # machine, without the waits of a busy one.
        "redraw_all_charts_1h_10hz_time_axis_moved_cpu": _figure(
            redraw_ms(row_step_s=4.0, clock=time.thread_time), "ms"),
        "baseline_repaint_all_charts_nothing_new_cpu": _figure(
            redraw_ms(new_rows=False, clock=time.thread_time), "ms"),
    }
    figures.update(decimation_us())
    figures.update(gpu_panel_refresh_ms())
    figures.update(launch_s())
    figures.update(event_loop_lag(lag_seconds))
    return figures


if __name__ == "__main__":
    for name, fig in run().items():
        print(f"{name:40s} min {fig['min']:9.3f}  median {fig['median']:9.3f}  "
              f"max {fig['max']:9.3f} {fig['unit']}")
