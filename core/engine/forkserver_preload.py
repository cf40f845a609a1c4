"""Imported once in the engine forkserver (core.engine.forkserver), never in the app itself:
importing it does the preloading.

It imports what vLLM's engine-core process imports (torch, vLLM's engine core, executors and
workers), so every engine core forked from the server starts with them loaded. Importing them
does not initialise CUDA (vLLM's own API server preloads its forkserver the same way); that is
checked here, because CUDA cannot be used in a child forked after it was initialised: then the
server exits and the app goes back to vLLM's own process start.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os

from core.engine.forkserver import PROCESS_TITLE
from core.engine.vllm_process import quiet_teardown

# The engine core's own imports; the workers' for the in-process (single-GPU) executor. A module
# a platform lacks is skipped.
PRELOAD = ("torch", "transformers", "vllm.v1.engine.core", "vllm.v1.executor.multiproc_executor",
           "vllm.v1.executor.uniproc_executor", "vllm.v1.worker.gpu_worker",
           "vllm.v1.worker.cpu_worker")


def _preload() -> None:
    quiet_teardown()  # exits after its imports: the same teardown noise as the app's
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    import torch

    if torch.cuda.is_initialized():
        # Nothing may be forked from here: the app sees the server gone and spawns instead.
        os._exit(3)
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(PROCESS_TITLE)
    # Out of the collector's reach, in the server and in every process forked from it (the
    # children's collections then skip the ~600k objects of the imports; their pages stay shared).
    gc.freeze()


_preload()
