"""Setting up vLLM's engine processes, apart from driving them (core.engine.vllm_engine).

- Logging: vLLM's loggers write everything to a file and warnings to stderr; the spawned engine
  core reads the same config from the environment, and its start-up errors are read back from
  that file (the parent only sees "Engine core initialization failed").
- Environment: the variables the spawned engine processes read (logging config, worker grace).
- Imports: vLLM's ~8 s import, kept from stalling the event loop, and freezing the heap it
  leaves behind out of the collector's way.
- Exit: the teardown noise vLLM's imports bring (nanobind leak reports) is kept off stderr.
Engine processes themselves (finding, ending, reaping orphans) are core.engine.processes.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
from pathlib import Path

_LOG_FILE = "vllm-engine.log"
_LOG_CONFIG_FILE = "vllm-logging.json"
_LOG_MAX_BYTES = 20 * 1024 * 1024
_import_heap_frozen = False
_teardown_quiet = False

# Seconds vLLM's engine core gives its worker to exit by itself at shutdown (vLLM's default: 5).
WORKER_SHUTDOWN_GRACE_S = 1


def write_logging_config(log_dir: Path) -> tuple[Path, Path]:
    """A vLLM logging config sending everything to a file and warnings to stderr.

    The engine core runs in its own process and raises its start-up errors there; the parent only
    sees "Engine core initialization failed", so the real message is read back from this file.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / _LOG_FILE
    fmt = "%(asctime)s %(processName)s pid=%(process)d %(levelname)s [%(name)s] %(message)s"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_file),
                     "formatter": "plain", "level": "INFO", "encoding": "utf-8"},
            "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                        "formatter": "plain", "level": "WARNING"},
            "console_errors": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                               "formatter": "plain", "level": "ERROR"},
        },
        "loggers": {"vllm": {"handlers": ["file", "console"], "level": "INFO",
                             "propagate": False},
                    # They warn when an engine process outlives its grace at an unload and
                    # is terminated or killed: planned (WORKER_SHUTDOWN_GRACE_S,
                    # UNLOAD_GRACE_S), so warnings go to the file only, errors still show.
                    **{name: {"handlers": ["file", "console_errors"], "level": "INFO",
                              "propagate": False}
                       for name in ("vllm.v1.utils", "vllm.v1.executor.multiproc_executor")}},
    }
    config_file = log_dir / _LOG_CONFIG_FILE
    config_file.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return config_file, log_file


def quiet_teardown() -> None:
    """From the end of the atexit callbacks on, send this process's stderr to /dev/null. Idempotent.

    Call it before vLLM is imported. What writes to stderr after the atexit callbacks is the
    interpreter's teardown, and with vLLM imported that is third-party noise, not news:
    - nanobind (the bindings of triton, which vLLM imports) reports every object and type
      still alive when it is unloaded: hundreds of "leaked instance/type" lines, each exit;
    - vLLM's ``AsyncLLM.__del__`` calls its shutdown() again while modules are being torn down
      and prints "TypeError: 'NoneType' object is not callable" (the engine processes were
      ended already: our unload ends them whatever vLLM does).
    triton does the same in its own compile workers (triton/_compile_warmup_pool.py,
    _silence_worker_shutdown_diagnostics). atexit runs callbacks last-registered first, so this
    one, registered before vLLM's, runs after them: their output, and the traceback of an
    uncaught exception (printed before any callback), still show.
    """
    global _teardown_quiet
    if not _teardown_quiet:
        _teardown_quiet = True
        atexit.register(_stderr_to_devnull)


def _stderr_to_devnull() -> None:
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError):  # stderr already closed: nothing to silence
        pass


def import_vllm() -> None:
    """Import vLLM and transformers (~8 s, longer on a busy machine), then freeze the heap they
    leave (freeze_import_heap). Blocking: load() runs it in its worker thread.

    Imports in a thread still hold the GIL, in stretches the event loop feels as stalls; the two
    long ones are taken out here (from 300-700 ms to under ~80 ms on the build machine):
    - full collections: each walks every object the imports made so far (~600k by the end),
      so none runs during the imports (the young generations still do);
    - loading torch's largest native library (dlopen, ~0.3-0.5 s): done first, by a call that
      releases the GIL (_preload_torch_libraries).
    """
    with _import_lock:
        quiet_teardown()
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], _NO_FULL_COLLECTIONS)
        try:
            _preload_torch_libraries()
            for module in _VLLM_MODULES:
                importlib.import_module(module)
            freeze_import_heap()  # before a full collection may run again
        finally:
            gc.set_threshold(*thresholds)


# What a load needs imported: vLLM's engine and transformers' tokenizer loader.
_VLLM_MODULES = ("transformers", "transformers.models.auto.tokenization_auto",
                 "vllm.engine.arg_utils", "vllm.v1.engine.async_llm")
# The third collection threshold counts young collections between full ones: never reached.
_NO_FULL_COLLECTIONS = 1 << 30
# torch's native libraries with no Python in them (they load before torch's Python module),
# in load order. The CPU library is the big one in every build (~430 MB in torch 2.13+cpu).
_TORCH_NATIVE_LIBRARIES = ("libc10.so", "libtorch_cpu.so")
_import_lock = threading.Lock()


def _preload_torch_libraries() -> None:
    """Load torch's largest native libraries with the GIL released; torch's import then finds
    them loaded. Python's own loading of an extension (and ctypes.CDLL) holds the GIL through
    dlopen, but a ctypes call into libc's dlopen releases it like any foreign call. Only
    libraries that do not call into Python (their static initialisers run in this call).
    A library that fails to load is left to torch's import, which reports it."""
    if sys.platform != "linux" or "torch" in sys.modules:
        return
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return
    dlopen = ctypes.CDLL(None).dlopen
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = (ctypes.c_char_p, ctypes.c_int)
    folder = Path(spec.origin).parent / "lib"
    for name in _TORCH_NATIVE_LIBRARIES:
        path = folder / name
        if path.is_file():
            # The flags of Python's own extension loading (sys.getdlopenflags()).
            dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_LOCAL)


def freeze_import_heap() -> None:
    """Put every object alive now out of the cyclic collector's reach (``gc.freeze``). Idempotent.

    After the imports of torch, transformers and vLLM the process holds ~600k tracked objects; a
    full collection walks them all while holding the GIL (~350 ms on the build machine), which
    stalls the event loop whichever thread runs it - our gc.collect() after a shutdown, or one
    the interpreter starts itself. Those objects are module-level and live as long as the process,
    and right after the imports there is no cyclic garbage to freeze along with them.
    """
    global _import_heap_frozen
    if not _import_heap_frozen:
        _import_heap_frozen = True
        gc.freeze()


def read_log(log_file: Path, offset: int) -> str:
    try:
        with log_file.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def rotated_log(log_dir: Path) -> tuple[Path, Path, int]:
    """Write the logging config; start the log file afresh once it passed _LOG_MAX_BYTES.
    Returns (config file, log file, the log's size now: where this load's lines begin)."""
    config_file, log_file = write_logging_config(log_dir)
    if log_file.exists() and log_file.stat().st_size > _LOG_MAX_BYTES:
        log_file.unlink()
    offset = log_file.stat().st_size if log_file.exists() else 0
    return config_file, log_file, offset


def set_engine_environment(config_file: Path) -> None:
    """The variables vLLM's spawned engine processes read at start-up."""
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)
    # At shutdown vLLM's engine core waits this long for its worker to exit on its own
    # before it sends SIGTERM (which the worker handles as a clean exit). Its default of
    # 5 s was most of every unload here; a user's own setting is kept.
    os.environ.setdefault("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", str(WORKER_SHUTDOWN_GRACE_S))


def console_errors_only() -> None:
    """vLLM's stderr console gets errors only from now on; the log file keeps everything."""
    for handler in logging.getLogger("vllm").handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.ERROR)
