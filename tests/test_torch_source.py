"""The set-up's choice of where the CPU torch wheel comes from (scripts/torch_source.py).

Both branches run the real pip against prepared wheel folders, with --no-index: no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "torch_source.py"
INDEX_OPTIONS = "--extra-index-url https://download.pytorch.org/whl/cpu"


def _pin() -> str:
    """The cpu extra's torch pin, read here without the script (tomllib)."""
    import tomllib

    cpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["cpu"]
    pins = [r for r in cpu if r.startswith("torch==")]
    assert len(pins) == 1, cpu
    return pins[0]


def _wheel_folder(tmp_path: Path, version: str | None) -> Path:
    """A find-links folder holding a minimal valid torch wheel of that version (or nothing)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    if version is not None:
        dist = f"torch-{version}.dist-info"
        with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{dist}/METADATA",
                         f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
            whl.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                         "Root-Is-Purelib: true\nTag: py3-none-any\n")
            whl.writestr(f"{dist}/RECORD", "")
    return folder


def _isolated_pip_env(find_links: Path) -> dict[str, str]:
    """This pip with no config file and no PIP_* variables but one find-links folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_FIND_LINKS"] = str(find_links)
    return env


def _run(engine: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), engine], capture_output=True, text=True,
                          env=env, timeout=180, check=True)


def test_the_pin_is_a_cpu_local_version() -> None:
    assert _pin().endswith("+cpu")


def test_a_local_wheel_folder_adds_no_index(tmp_path: Path) -> None:
    version = _pin().removeprefix("torch==")
    result = _run("cpu", _isolated_pip_env(_wheel_folder(tmp_path, version)))
    assert result.stdout.strip() == ""
    assert "local wheel folder" in result.stderr


def test_without_the_wheel_the_pytorch_cpu_index_is_added(tmp_path: Path) -> None:
    # A folder with another torch release only: the pinned +cpu build is not found offline.
    result = _run("cpu", _isolated_pip_env(_wheel_folder(tmp_path, "2.0.0")))
    assert result.stdout.strip() == INDEX_OPTIONS
    assert "PyTorch's CPU index" in result.stderr


def test_the_cuda_build_needs_no_extra_index(tmp_path: Path) -> None:
    result = _run("cuda", _isolated_pip_env(_wheel_folder(tmp_path, None)))
    assert result.stdout.strip() == ""


def test_this_machine_matches_its_own_wheel_folders() -> None:
    """With the machine's real pip settings: no index exactly when a find-links folder has it."""
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    folders = [line.split("=", 1)[1].strip("'") for line in config.splitlines()
               if line.split("=", 1)[0].endswith("find-links")]
    folders += os.environ.get("PIP_FIND_LINKS", "").split()
    version = _pin().removeprefix("torch==")
    has_wheel = any(Path(f).is_dir() and any(Path(f).glob(f"torch-{version}-*.whl"))
                    for f in folders)
    result = _run("cpu", dict(os.environ))
    assert result.stdout.strip() == ("" if has_wheel else INDEX_OPTIONS)


def test_bad_engine_is_refused() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "rocm"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "usage" in result.stderr


@pytest.mark.parametrize("engine", ["cpu", "cuda"])
def test_the_makefile_passes_the_options_to_pip(engine: str) -> None:
    dry = subprocess.run(["make", "-n", "setup", f"ENGINE={engine}", "VENV=/nonexistent-venv"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"-e '.[{engine},dev]' $(/nonexistent-venv/bin/python scripts/torch_source.py " \
           f"{engine})" in dry
