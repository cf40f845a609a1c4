"""`vrampilot status` end to end: real host, simulated GPU, JSON and table, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.cli import main


def test_json_with_simulated_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--simulate", "rtx4090-laptop"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["host"]["ram_total_bytes"] > 0
    assert 0 <= data["host"]["cpu_percent"] <= 100
    (gpu,) = data["gpus"]
    assert gpu["simulated"] is True
    assert gpu["name"] == "NVIDIA GeForce RTX 4090 Laptop GPU (simulated)"
    assert gpu["vram_total_bytes"] == 16 * 1024**3
    assert gpu["fan_percent"] is None
    assert data["alerts"] == []


def test_table_with_simulated_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--simulate", "rtx4090-laptop"]) == 0
    out = capsys.readouterr().out
    assert "(simulated)" in out
    assert "16.0 GiB" in out
    assert "Fan n/a" in out
    assert "Host" in out


def test_unknown_profile_lists_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--simulate", "rtx9999"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'rtx9999'; known: rtx4090-laptop" in err


def test_bad_config_file_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text("hardware_monitoring:\n  thresholds:\n    power: {warning: 150}\n")
    assert main(["status", "--config", str(user), "--simulate", "rtx4090-laptop"]) == 2
    err = capsys.readouterr().err
    assert str(user) in err
    assert "hardware_monitoring.thresholds.power" in err
    assert "above critical" in err


def test_watch_refreshes_until_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:  # the third wait is where the user presses Ctrl-C
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    code = main(["status", "--json", "--watch", "2", "--simulate", "rtx4090-laptop"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert sleeps[1:] == [2.0, 2.0]
    assert all(json.loads(line)["gpus"][0]["simulated"] for line in lines)


def test_watch_rejects_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["status", "--watch", "soon"])
    assert info.value.code == 2
    assert "expected seconds" in capsys.readouterr().err
