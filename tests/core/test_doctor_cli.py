"""`vrampilot doctor` end to end, and `make run` stopping on its advice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISPLAY_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE",
                "QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DISPLAY_VARS}
    env.update({"PYTHONPATH": str(ROOT), "VRAMPILOT_DATA_DIR": str(tmp_path / "data")})
    env.update(extra)
    return env


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gui.launcher", "doctor", *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def test_quick_doctor_offscreen_can_run(tmp_path: Path) -> None:
    result = _doctor(_env(tmp_path, QT_QPA_PLATFORM="offscreen"), "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("vrampilot doctor: the app can run")
    for name in ("Python", "NVIDIA driver", "vLLM build", "Qt platform", "display", "disk space",
                 "history database", "configuration", "remote endpoint", "local API address"):
        assert any(line[6:].startswith(name) for line in lines), name
    assert result.stderr == ""


def test_no_display_cannot_run(tmp_path: Path) -> None:
    result = _doctor(_env(tmp_path), "--quick")
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith("vrampilot doctor: the app cannot run (")
    assert "display" in first
    assert "xvfb-run" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_json_names_the_unwritable_data_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = _env(tmp_path, QT_QPA_PLATFORM="offscreen", VRAMPILOT_DATA_DIR=str(blocker / "data"))
    result = _doctor(env, "--quick", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["can_run"] is False
    assert report["verdict"].startswith("vrampilot doctor: the app cannot run (history database")
    row = next(c for c in report["checks"] if c["name"] == "history database")
    assert row["status"] == "fail"
    assert "VRAMPILOT_DATA_DIR" in row["fix"]


def test_a_bad_config_is_a_failed_check(tmp_path: Path) -> None:
    config = tmp_path / "user.yaml"
    config.write_text("model_switching:\n  max_temperature_c: hot\n")
    result = _doctor(_env(tmp_path, QT_QPA_PLATFORM="offscreen"), "--quick", "--json",
                     "--config", str(config))
    assert result.returncode == 1
    row = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "configuration")
    assert row["status"] == "fail"
    assert str(config) in row["found"]
    assert "max_temperature_c" in row["found"]


@pytest.mark.vllm  # the full run imports vLLM (~10 s)
def test_full_run_an_unreachable_remote_is_a_warning_only(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "user.yaml"
    config.write_text(f"remote:\n  base_url: http://127.0.0.1:{port}/v1\n  model: big\n")
    result = _doctor(_env(tmp_path, QT_QPA_PLATFORM="offscreen"), "--json", "--config",
                     str(config))
    report = json.loads(result.stdout)
    rows = {c["name"]: c for c in report["checks"]}
    assert rows["remote endpoint"]["status"] == "warn"
    assert "unreachable" in rows["remote endpoint"]["found"]
    assert rows["vLLM import"]["status"] == "ok"
    assert rows["torch"]["status"] == "ok"
    assert report["can_run"] is True
    assert result.returncode == 0


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_stops_on_the_doctor_advice(tmp_path: Path) -> None:
    """No display: `make run` prints the doctor's fix and never starts the app."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "vrampilot").exists():
        pytest.skip("the vrampilot entry point is not installed in this environment")
    result = subprocess.run(
        # -o: take the set-up as done (the venv running this test), do not reinstall.
        ["make", "-o", str(venv / ".vrampilot-installed"), "run", f"VENV={venv}"],
        cwd=ROOT, capture_output=True, text=True, env=_env(tmp_path), timeout=300, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "vrampilot doctor: the app cannot run" in out
    assert "xvfb-run" in out
    assert "build-demo" not in result.stdout.split("doctor --quick", 1)[1]
    assert "Traceback" not in out
