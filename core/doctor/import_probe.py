"""Run by engine_checks.probe_engine_imports in a fresh interpreter: import torch, then vLLM.

Prints one JSON line after each import, so a crash or a hang shows which import it was.
"""

from __future__ import annotations

import json
import sys


def _emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> int:
    import torch

    available = bool(torch.cuda.is_available())
    _emit({"torch": {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": available,
        "device": torch.cuda.get_device_name(0) if available else "cpu",
    }})
    import vllm

    _emit({"vllm": vllm.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
