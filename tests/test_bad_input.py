"""Bad input at every entry point: exit code 2, one sentence naming the file, key or value, no
traceback, and nothing started (the app mode answers before any Qt window).

Each case runs the real `vrampilot` entry point in a subprocess with a private data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import command_names
from core.config import load_app_config
from core.config_loading import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# The arguments each headless command needs besides the common options.
COMMAND_ARGS = {
    "status": [],
    "models": [],
    "estimate": ["qwen3-8b"],
    "route": ["--task-type", "chat", "--text", "hi"],
    "generate": ["hi"],
    "history": [],
    "build-demo": [],
    "doctor": ["--quick"],
    "pull": ["demo-tiny-a"],
    "soak": ["--model", "demo-tiny-a", "--minutes", "0.1"],
}


def run_vrampilot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(tmp_path / "data"),
               QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    return subprocess.run([sys.executable, "-m", "gui.launcher", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path, check=False)


def assert_one_sentence(result: subprocess.CompletedProcess[str], *named: str) -> str:
    """Exit 2, one line on stderr naming everything in `named`, no traceback, nothing on stdout."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in named:
        assert text in lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("model_switching:\n  max_power_w: lots\n", encoding="utf-8")
    return path


# -- the app mode (no command): answered before Qt starts -----------------------------------------
def test_app_with_a_bad_config(tmp_path: Path, bad_config: Path) -> None:
    result = run_vrampilot(tmp_path, "--config", str(bad_config), "--no-autoload")
    assert_one_sentence(result, str(bad_config), "model_switching.max_power_w", "lots")


def test_app_with_a_missing_config(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run_vrampilot(tmp_path, "--config", str(missing), "--no-autoload")
    assert_one_sentence(result, str(missing), "cannot read")


def test_app_with_an_unknown_profile(tmp_path: Path) -> None:
    result = run_vrampilot(tmp_path, "--simulate", "bogus", "--no-autoload")
    assert_one_sentence(result, "'bogus'", "rtx4090-laptop")


def test_app_with_a_corrupt_history(tmp_path: Path) -> None:
    db = corrupt_history(tmp_path)
    result = run_vrampilot(tmp_path, "--simulate", "rtx4090-laptop", "--no-autoload")
    assert_one_sentence(result, str(db), "not a database")
    assert db.read_bytes() == b"not a database, just text " * 400  # left as it was


# -- every headless command -----------------------------------------------------------------------
def test_every_command_is_covered() -> None:
    assert sorted(COMMAND_ARGS) == sorted(command_names())


# The doctor is the exception: a bad config is one of its failed checks (exit 1, in its table),
# tests/core/test_doctor_cli.py::test_a_bad_config_is_a_failed_check.
@pytest.mark.parametrize("command", sorted(set(COMMAND_ARGS) - {"doctor"}))
def test_command_with_a_bad_config(command: str, tmp_path: Path, bad_config: Path) -> None:
    result = run_vrampilot(tmp_path, command, "--config", str(bad_config),
                           *COMMAND_ARGS[command])
    assert_one_sentence(result, str(bad_config), "model_switching.max_power_w")
    assert not (tmp_path / "data" / "models").exists()  # build-demo built nothing


@pytest.mark.parametrize("command", sorted(COMMAND_ARGS))
def test_command_with_an_unknown_profile(command: str, tmp_path: Path) -> None:
    result = run_vrampilot(tmp_path, command, "--simulate", "bogus", *COMMAND_ARGS[command])
    assert_one_sentence(result, "'bogus'")


def test_build_demo_into_an_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, not a directory", encoding="utf-8")
    target = blocker / "model"  # even root cannot create a directory inside a file
    result = run_vrampilot(tmp_path, "build-demo", "--path", str(target))
    assert_one_sentence(result, str(target))


def corrupt_history(tmp_path: Path) -> Path:
    db = tmp_path / "data" / "history.sqlite3"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database, just text " * 400)
    return db


@pytest.mark.parametrize("command", ["history", "generate"])
def test_command_with_a_corrupt_history(command: str, tmp_path: Path) -> None:
    db = corrupt_history(tmp_path)
    result = run_vrampilot(tmp_path, command, *COMMAND_ARGS[command])
    assert_one_sentence(result, str(db), "not a database")


def test_history_routing_with_a_corrupt_history(tmp_path: Path) -> None:
    db = corrupt_history(tmp_path)
    result = run_vrampilot(tmp_path, "history", "--routing")
    assert_one_sentence(result, str(db), "not a database")
    assert db.read_bytes() == b"not a database, just text " * 400  # left as it was


def test_history_limit_must_be_positive(tmp_path: Path) -> None:
    result = run_vrampilot(tmp_path, "history", "--limit", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--limit: expected at least 1, got -1" in result.stderr


@pytest.mark.parametrize("args", [["history"], ["models"], ["--simulate", "rtx4090-laptop",
                                                             "--no-autoload"]])
def test_a_data_dir_that_is_a_file(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be", encoding="utf-8")
    result = run_vrampilot(tmp_path, *args)
    assert_one_sentence(result, str(tmp_path / "data"), "VRAMPILOT_DATA_DIR")


# -- config values ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "key", "value"), [
    ('base_url: "not a url"', "remote.base_url", "'not a url'"),
    ('base_url: "ftp://host/v1"', "remote.base_url", "'ftp://host/v1'"),
    ('base_url: "http://host:port/v1"', "remote.base_url", "'http://host:port/v1'"),
    ("read_timeout_s: -1", "remote.read_timeout_s", "-1"),
    ("connect_timeout_s: 0", "remote.connect_timeout_s", "0"),
    ("connect_retries: -2", "remote.connect_retries", "-2"),
])
def test_remote_values_are_checked(line: str, key: str, value: str, tmp_path: Path) -> None:
    path = tmp_path / "remote.yaml"
    settings = {"base_url": '"http://gpu-box:8000/v1"', "model": "m"}
    name, _, given = line.partition(": ")
    settings[name] = given
    path.write_text("remote:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items()),
                    encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert value in info.value.problem


@pytest.mark.parametrize(("line", "key"), [
    ("switch_timeout_seconds: 0", "model_switching.switch_timeout_seconds"),
    ("memory_return_timeout_seconds: -5", "model_switching.memory_return_timeout_seconds"),
    ("memory_poll_interval_seconds: 0", "model_switching.memory_poll_interval_seconds"),
])
def test_switching_timeouts_must_be_positive(line: str, key: str, tmp_path: Path) -> None:
    path = tmp_path / "timeouts.yaml"
    path.write_text(f"model_switching:\n  {line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)


def test_bad_remote_url_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "remote.yaml"
    path.write_text('remote:\n  base_url: "not a url"\n  model: m\n', encoding="utf-8")
    result = run_vrampilot(tmp_path, "models", "--config", str(path))
    assert_one_sentence(result, str(path), "remote.base_url", "'not a url'")


@pytest.mark.parametrize(("args", "named"), [
    (["--temperature", "-1"], ("--temperature", "-1")),
    (["--temperature", "nan"], ("--temperature", "nan")),
    (["--temperature", "2.5"], ("--temperature", "2.5")),
    (["--max-tokens", "0"], ("--max-tokens",)),
])
def test_generate_refuses_bad_sampling_before_loading(args: list[str], named: tuple[str, ...],
                                                      tmp_path: Path) -> None:
    """Refused up front: no model is loaded for a request the engine would reject (a negative
    temperature used to load a model, then fail with vLLM's traceback-like error, exit 1)."""
    result = run_vrampilot(tmp_path, "generate", "hi", *args)
    assert_one_sentence(result, *named)
    assert not (tmp_path / "data" / "history.sqlite3").exists()  # nothing started


def test_a_yaml_syntax_error_is_one_sentence_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model_switching:\n  max_power_w: [150\n", encoding="utf-8")
    result = run_vrampilot(tmp_path, "models", "--config", str(path))
    line = assert_one_sentence(result, str(path), "not valid YAML", "line 3, column 1")
    assert "expected ',' or ']'" in line
