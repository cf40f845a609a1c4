"""`vrampilot generate`: bad input is refused before any engine starts; a real run streams."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def vrampilot(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "gui.launcher", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def test_unknown_model_is_named_with_the_known_ones(tmp_path: Path) -> None:
    result = vrampilot("generate", "--model", "gpt-9", "hello", data_dir=tmp_path)
    assert result.returncode == 2
    assert "gpt-9" in result.stderr
    assert "demo-tiny-a" in result.stderr  # the known ids are listed
    assert "Traceback" not in result.stderr


def test_empty_prompt_and_bad_max_tokens_are_refused(tmp_path: Path) -> None:
    assert vrampilot("generate", "   ", data_dir=tmp_path).returncode == 2
    result = vrampilot("generate", "--max-tokens", "0", "hi", data_dir=tmp_path)
    assert result.returncode == 2
    assert "--max-tokens" in result.stderr


@pytest.mark.vllm
def test_generate_streams_through_router_and_manager(tmp_path: Path,
                                                     demo_model_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    # The demo models are the same builder's output: link the session's build instead of
    # building twice.
    (models / "demo-tiny-a").symlink_to(demo_model_dir, target_is_directory=True)
    result = vrampilot("generate", "--task-type", "simple_extraction", "--max-tokens", "8",
                       "Extract the name: Ada Lovelace", data_dir=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[switch] ready" in result.stderr
    # The router picks from the local demo tier (generate builds the missing demo models).
    done = re.search(r"\[done\] model (demo-[a-z-]+): 8 tokens", result.stderr)
    assert done is not None, result.stderr[-3000:]
    assert done.group(1) in ("demo-small", "demo-tiny-a", "demo-tiny-b")
    assert "Complexity" in result.stderr or "complexity" in result.stderr  # router explanation
    history = vrampilot("history", "--json", data_dir=tmp_path)
    assert f'"to_model": "{done.group(1)}"' in history.stdout


def test_bad_top_p_and_seed_are_refused(tmp_path: Path) -> None:
    result = vrampilot("generate", "--top-p", "1.5", "hi", data_dir=tmp_path)
    assert result.returncode == 2
    assert "--top-p must be in (0, 1], not 1.5" in result.stderr
    result = vrampilot("generate", "--seed", "-3", "hi", data_dir=tmp_path)
    assert result.returncode == 2
    assert "--seed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.vllm
def test_same_seed_same_reply_with_system_prompt_and_no_think(tmp_path: Path,
                                                              demo_model_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "demo-tiny-a").symlink_to(demo_model_dir, target_is_directory=True)
    args = ("generate", "--model", "demo-tiny-a", "--max-tokens", "12", "--temperature", "1.0",
            "--top-p", "0.9", "--seed", "77", "--system", "You are terse.", "--no-think",
            "Say something.")
    first = vrampilot(*args, data_dir=tmp_path, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    second = vrampilot(*args, data_dir=tmp_path, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert first.stdout.strip()
    assert first.stdout == second.stdout
    other = vrampilot(*[a if a != "77" else "78" for a in args], data_dir=tmp_path, timeout=400)
    assert other.returncode == 0, other.stderr[-3000:]
    assert other.stdout != first.stdout
