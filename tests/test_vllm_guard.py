"""The conftest guard: a test not marked `vllm` that leaves a vLLM-looking process running fails.

Runs a tiny test file in a child pytest with the project's conftest; the "engine" is a sleeping
Python process whose command line names VLLM::EngineCore (what looks_like_engine keys on).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INNER = '''
import atexit, subprocess, sys
import pytest

PROCS = []
atexit.register(lambda: [p.kill() for p in PROCS])

def _start():
    PROCS.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                   "VLLM::EngineCore"]))

@pytest.fixture(scope="module")
def server():
    _start()
    yield
    for p in PROCS:
        p.kill()
        p.wait()

def test_unmarked_uses_server(server):
    pass

@pytest.mark.vllm
def test_marked_starts_one():
    _start()

def test_unmarked_plain():
    pass
'''

CONFTEST = "from tests.conftest import *  # noqa: F403\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _project_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child pytest runs in a temp dir: it finds `tests.conftest` through PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def test_unmarked_test_starting_an_engine_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    vllm: real vLLM\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    # The module fixture started for an unmarked test: an error naming the process.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_unmarked_uses_server is not marked `vllm` but its setup "
                                 "started vLLM: process *VLLM::EngineCore*"])


def test_marked_tests_are_exempt(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    vllm: real vLLM\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-m", "vllm")
    result.assert_outcomes(passed=1, deselected=2)
