"""`vrampilot models`, `estimate` and `route` run end to end through the CLI dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def put_demo_on_disk(data_dir: Path) -> None:
    directory = data_dir / "models" / "demo-tiny-a"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "qwen3"}')


def test_models_json_on_simulated_card(capsys: pytest.CaptureFixture[str],
                                       data_dir: Path) -> None:
    put_demo_on_disk(data_dir)
    assert main(["models", "--simulate", "rtx4090-laptop", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {row["id"]: row for row in out["models"]}
    assert out["device"]["total_bytes"] == 16 * 1024**3
    assert rows["qwen3-30b-a3b-instruct-2507"]["fits"] is False
    assert rows["qwen3-30b-a3b-instruct-2507"]["max_context"] == 0
    assert rows["qwen3-14b"]["fits"] is True
    assert rows["qwen3-14b"]["max_context"] > 8192
    assert rows["demo-tiny-a"]["on_disk"] is True
    assert rows["demo-tiny-b"]["on_disk"] is False
    assert rows["qwen3-4b-thinking-2507"]["note"] is None  # an FP8 checkpoint vLLM loads
    assert rows["qwen3-4b-thinking-2507"]["fits"] is True
    assert rows["remote"]["size_bytes"] is None


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--simulate", "rtx4090-laptop"]) == 0
    out = capsys.readouterr().out
    assert "simulated rtx4090-laptop at idle" in out
    assert "qwen3-14b" in out


def test_estimate_on_a_device_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["estimate", "qwen3-4b-instruct-2507", "--context", "262144",
                 "--device", "rtx4090-laptop", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is False
    assert out["kv_bytes"] == 36 * 1024**3
    assert out["device_total_bytes"] == 16 * 1024**3
    assert 0 < out["max_context"] < 262_144


def test_estimate_fits_and_prints_utilization(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "qwen3-14b", "--simulate", "rtx4090-laptop"]) == 0
    out = capsys.readouterr().out
    assert "fits:          yes" in out
    assert "gpu_memory_utilization: 0." in out


def test_estimate_without_device_uses_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "demo-tiny-a", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    if out["device"].startswith("host RAM"):  # no NVIDIA GPU: the CPU engine's overhead model
        assert out["gpu_memory_utilization"] * out["device_total_bytes"] > 1024**3
    assert out["device_total_bytes"] > 0
    assert out["device"]


def test_estimate_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "qwen3-8b-base", "--device", "rtx4090-laptop"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'qwen3-8b-base'" in err
    assert "qwen3-8b" in err


@pytest.mark.parametrize("argv", [
    ["estimate", "qwen3-8b", "--context", "-1", "--device", "rtx4090-laptop"],
    ["estimate", "qwen3-8b", "--device", "gtx-potato"],
    ["estimate", "remote", "--device", "rtx4090-laptop"],
])
def test_estimate_bad_input_exits_2(capsys: pytest.CaptureFixture[str],
                                    argv: list[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("vrampilot estimate: ")


def test_route_json_with_explanation(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    put_demo_on_disk(data_dir)
    code = main(["route", "--task-type", "salary_analysis", "--text", "equity, remote, hybrid",
                 "--simulate", "rtx4090-laptop", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["complexity"] == 0.8
    assert out["model"] == "demo-tiny-a"
    assert out["hardware"]["label"] == "simulated rtx4090-laptop at idle"
    assert {r["model"] for r in out["rejected"]} == {"qwen3-14b", "qwen3-8b",
                                                     "qwen3-4b-thinking-2507",
                                                     "qwen3-4b-instruct-2507", "demo-small"}
    assert "Chosen model: demo-tiny-a" in out["explanation"]


def test_route_file_private_and_unknown_type(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    task = tmp_path / "task.txt"
    task.write_text("x" * 6000)
    assert main(["route", "--task-type", "haiku", "--file", str(task), "--private",
                 "--simulate", "rtx4090-laptop"]) == 0
    out = capsys.readouterr().out
    assert "Complexity 0.50" in out
    assert "unknown task type 'haiku'" in out
    assert "rejected remote: the task is private" in out
    assert main(["route", "--task-type", "x", "--file", str(tmp_path / "none.txt")]) == 2


def test_config_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_switching:\n  fallback_cascade: [qwen3-8b-base]\n")
    assert main(["route", "--task-type", "x", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model_switching.fallback_cascade.0" in err
    assert str(bad) in err


def test_route_what_if_decides_on_the_assumed_state(capsys: pytest.CaptureFixture[str],
                                                    data_dir: Path) -> None:
    put_demo_on_disk(data_dir)
    base = ["route", "--task-type", "complex_reasoning", "--text", "x",
            "--simulate", "rtx4090-laptop"]
    assert main([*base, "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["hardware"]["assumed"] == []
    assert measured["candidates"][0] == "qwen3-8b"  # 15.4 GiB free, 0.7: not above 0.7

    # 9.5 GiB free: 8 <= free < 10 and complexity not below 0.7 -> the 4B thinking model.
    assert main([*base, "--free-gib", "9.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hardware"]["free_bytes"] == int(9.5 * 1024**3)
    assert out["hardware"]["total_bytes"] == 16 * 1024**3
    assert out["hardware"]["temperature_c"] == measured["hardware"]["temperature_c"]
    assert out["hardware"]["assumed"] == ["free_bytes"]
    assert out["candidates"][0] == "qwen3-4b-thinking-2507"
    assert "what-if: assumed, not measured: 9.50 GiB free" in out["explanation"]

    # Above 80 C the hot rules decide, whatever the free memory: 0.7 is not below 0.5 -> 8B.
    assert main([*base, "--free-gib", "5", "--temperature", "80.5"]) == 0
    text = capsys.readouterr().out
    assert "what-if: assumed, not measured: 5.00 GiB free, 80.5 C" in text
    assert "selection: hot: 80.5 C > 80 C" in text
    assert "rule: no rule above it applies -> prefer qwen3-8b" in text
    assert "Chosen model: demo-tiny-a" in text

    # Exactly 80 C is not hot.
    assert main([*base, "--temperature", "80", "--json"]) == 0
    at_80 = json.loads(capsys.readouterr().out)
    assert at_80["hot"] is False
    assert at_80["hardware"]["assumed"] == ["temperature_c"]


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--free-gib", "-1", "--free-gib expects GiB as a number of at least 0, got '-1'"),
    ("--free-gib", "lots", "--free-gib expects GiB as a number of at least 0, got 'lots'"),
    ("--free-gib", "nan", "got 'nan'"),
    ("--free-gib", "17", "--free-gib 17 is more than the device's 16.00 GiB in all"),
    ("--temperature", "-3", "--temperature expects degrees Celsius as a number of at least 0"),
    ("--temperature", "hot", "got 'hot'"),
    ("--temperature", "inf", "got 'inf'"),
])
def test_route_what_if_bad_values_exit_2(capsys: pytest.CaptureFixture[str], option: str,
                                         value: str, says: str) -> None:
    code = main(["route", "--task-type", "x", "--text", "x", "--simulate", "rtx4090-laptop",
                 option, value])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("vrampilot route: ")
    assert says in line
