"""`vrampilot soak`: bad input exits 2 with one sentence naming the flag, before any engine
starts; a real short run prints the report and saves JSON, CSV and the charts' PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"


def vrampilot(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "gui.launcher", "soak", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.mark.parametrize(("args", "flag"), [
    (("--minutes", "0"), "--minutes"),
    (("--minutes", "-2"), "--minutes"),
    (("--minutes", "nan"), "--minutes"),
    (("--concurrency", "65"), "--concurrency"),
    (("--concurrency", "0"), "--concurrency"),
    (("--prompt-tokens", "0"), "--prompt-tokens"),
    (("--max-tokens", "-1"), "--max-tokens"),
    (("--model", "gpt-9"), "--model"),
])
def test_bad_input_names_the_flag(tmp_path: Path, args: tuple[str, ...], flag: str) -> None:
    full = args if "--model" in args else ("--model", "demo-tiny-a", *args)
    result = vrampilot(*full, data_dir=tmp_path)
    assert result.returncode == 2
    assert flag in result.stderr
    assert result.stderr.count("\n") == 1  # one sentence
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "soak").exists()  # nothing ran, nothing saved


def test_no_model_active_and_none_given(tmp_path: Path) -> None:
    result = vrampilot("--minutes", "0.1", data_dir=tmp_path)
    assert result.returncode == 2
    assert "no model is active" in result.stderr
    assert "--model" in result.stderr


def test_bad_profile_file_names_the_file_and_key(tmp_path: Path) -> None:
    profile = tmp_path / "laptop.yaml"
    profile.write_text((DATA / "soak_fast_thermal.yaml").read_text().replace(
        "thermal_time_constant_s: 3", "thermal_time_constant_s: -3"))
    result = vrampilot("--model", "demo-tiny-a", "--simulate", str(profile), data_dir=tmp_path)
    assert result.returncode == 2
    assert str(profile) in result.stderr
    assert "thermal_time_constant_s" in result.stderr


@pytest.mark.vllm
def test_short_soak_prints_and_saves_the_report(tmp_path: Path, demo_model_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "demo-tiny-a").symlink_to(demo_model_dir, target_is_directory=True)
    result = vrampilot("--model", "demo-tiny-a", "--minutes", "0.2", "--concurrency", "2",
                       "--prompt-tokens", "32", "--max-tokens", "16", "--json",
                       "--simulate", str(DATA / "soak_fast_thermal.yaml"),
                       "--config", str(DATA / "soak_config.yaml"),
                       data_dir=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["model"] == "demo-tiny-a"
    assert report["ended_by"] == "time"
    assert report["tokens"] > 0
    assert report["first_throttle"]["reason"] == "SwThermal"
    [folder] = (tmp_path / "soak").iterdir()
    assert json.loads((folder / "report.json").read_text()) == report
    header = (folder / "samples.csv").read_text().splitlines()[0]
    assert header.startswith("t_s,temperature_c,power_w")
    assert (folder / "charts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[soak] saved" in result.stderr
