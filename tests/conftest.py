"""Shared fixtures.

``demo_model_dir``: the tiny random Qwen3 (1.4 MB, ~5 s to build) built once per test session into a
temp dir, so tests that need a real model directory never touch the user's data dir or the network.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built demo model (seed 0). Treat it as read-only: copy it before altering files."""
    from core.engine.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model") / "demo-tiny-a", seed=0,
                            name="demo-tiny-a")
