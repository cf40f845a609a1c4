"""A forkserver that has imported torch and vLLM, from which vLLM's engine core is forked.

Every load starts a fresh engine-core process (that is how its memory goes back at an unload).
vLLM spawns it, and a spawned interpreter imports torch and vLLM again: on the CPU build that was
most of every load. Python's multiprocessing forkserver is one extra process, started once, that
imports them (core.engine.forkserver_preload) and then forks a child per request, so the engine
core starts with its imports done. It is started in the background after the first load, so
that load's environment (what vLLM sets in the app's process) is the one it imports with.

What a forked engine core still gets right:
- the environment: the server's is the one it was started with; the app's environment at the
  moment vLLM starts the process is carried over and put in place before vLLM's code runs;
- logging: vLLM configured its loggers in the server from our logging config; the child
  configures them again from the config file (the log may have been rotated since);
- CUDA: the server never initialises it (checked there), so a forked child can use the GPU.
- the workers: an engine core forked from the server forks vLLM's worker processes (the CPU
  build's executor, several GPUs) from the same server. vLLM gives a CPU worker its OpenMP
  thread count and CPU list in the environment, which the OpenMP runtime reads once, when torch
  loads (in the server, long before): the child applies them itself (torch.set_num_threads, and
  the CPU list as the process's affinity, which the OpenMP threads it starts inherit; one set for
  all of them rather than one CPU each).

The engine core is then the server's child, not the app's: it is still among the app's
descendants, dies by signal the same way, and the server reaps it and reports its exit code to
vLLM's process object. The server itself is not an engine process: it is ended by stop() (the
app's close) and exits by itself once the app and every child forked from it have gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver as mp_forkserver
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psutil

logger = logging.getLogger(__name__)

PRELOAD_MODULE = "core.engine.forkserver_preload"
# The server renames itself to this once its imports are done (core.engine.forkserver_preload).
PROCESS_TITLE = "vrampilot::engine-forkserver"

_lock = threading.Lock()
_failed = False  # the server died on its own (e.g. its imports initialised CUDA): spawn from now on
_patched = False
_stopping = False


class EngineProcess(multiprocessing.context.ForkServerProcess):
    """A process forked from the server that runs with the environment the app had when it was
    started, not the server's."""

    def start(self) -> None:
        # vLLM sets variables for its child right before start() (thread counts, its logging
        # config): this is the moment spawn would have copied the environment.
        self._app_environ = dict(os.environ)
        super().start()

    def run(self) -> None:
        server_environ = dict(os.environ)
        adopt_environment(getattr(self, "_app_environ", None))
        apply_openmp_environment(server_environ, os.environ)
        _fork_workers_from_server()
        super().run()


class EngineContext(multiprocessing.context.ForkServerContext):
    Process = EngineProcess


_context = EngineContext()


def adopt_environment(environ: dict[str, str] | None) -> None:
    """In a forked child: the app's environment, and vLLM's logging configured from it again."""
    if environ is None:
        return
    os.environ.clear()
    os.environ.update(environ)
    config_path = environ.get("VLLM_LOGGING_CONFIG_PATH")
    if environ.get("VLLM_CONFIGURE_LOGGING", "1") != "0" and config_path:
        try:
            with open(config_path, encoding="utf-8") as fh:
                logging.config.dictConfig(json.load(fh))
        except (OSError, ValueError, TypeError) as exc:
            logging.getLogger(__name__).warning("vLLM logging not reconfigured: %s", exc)


def _server() -> Any:
    """multiprocessing's forkserver client state (one per process; no public accessors)."""
    return mp_forkserver._forkserver


def _cpu_list(text: str) -> set[int]:
    """CPUs named in an OpenMP variable: "0 1 2" (GOMP_CPU_AFFINITY), "{0,1,2}" (OMP_PLACES),
    "...proclist=[0,1,2]" (KMP_AFFINITY); ranges "4-7" too. Empty: not understood."""
    cpus: set[int] = set()
    body = text.split("proclist=", 1)[-1]
    for part in re.split(r"[\s,{}\[\]]+", body):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m:
            first = int(m.group(1))
            cpus.update(range(first, int(m.group(2) or first) + 1))
    return cpus


def apply_openmp_environment(before: Mapping[str, str], after: Mapping[str, str]) -> None:
    """In a forked child: the OpenMP settings vLLM put in its environment (``after``) that the
    OpenMP runtime, loaded in the server with ``before``, did not see."""
    threads = after.get("OMP_NUM_THREADS")
    if threads and threads != before.get("OMP_NUM_THREADS") and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))
    for key in ("GOMP_CPU_AFFINITY", "OMP_PLACES", "KMP_AFFINITY"):
        value = after.get(key)
        if value and value != before.get(key):
            cpus = _cpu_list(value)
            if cpus and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, cpus)
            break


def _fork_workers_from_server() -> None:
    """In an engine core forked from the server: vLLM's workers are forked from it too.

    multiprocessing's client state came along with the fork (the server's address, and the
    app's "alive" pipe set up by the server for this child), but not the server's pid, without
    which it would start a second server of its own: the one it has is kept."""
    server = _server()
    if server._forkserver_address is None or server._forkserver_alive_fd is None:
        return
    from multiprocessing import resource_tracker

    server.ensure_running = resource_tracker.ensure_running
    with contextlib.suppress(ImportError):
        from vllm.v1.executor import multiproc_executor

        multiproc_executor.get_mp_context = lambda: _context


def pid() -> int | None:
    """The server's pid, if it was started and still runs."""
    server = _server()
    server_pid = server._forkserver_pid
    if server_pid is None:
        return None
    try:
        done, _status = os.waitpid(server_pid, os.WNOHANG)
    except ChildProcessError:
        done = server_pid
    if done:
        _forget()
        _gave_up(server_pid)
        return None
    return server_pid


def _gave_up(server_pid: int) -> None:
    """The server exited though nobody stopped it (its imports initialised CUDA, it crashed):
    say so once and spawn from now on rather than start it again and again."""
    global _failed
    if not _failed and not _stopping:
        _failed = True
        logger.warning("the engine forkserver (pid %s) exited: engines are spawned from now on",
                       server_pid)


def running() -> bool:
    return pid() is not None


def ready() -> bool:
    """Running and done with its imports (the preload renames it as its last step)."""
    server_pid = pid()
    if server_pid is None:
        return False
    try:
        return " ".join(psutil.Process(server_pid).cmdline()).startswith(PROCESS_TITLE)
    except psutil.Error:
        return False


def wait_ready(check: Callable[[], None] = lambda: None, timeout_s: float = 120.0) -> bool:
    """If the server runs, wait until it is done importing (a fork from it then starts the
    engine core sooner than a spawn, whose imports start from zero). ``check`` is called every
    poll and may raise to stop waiting (a cancelled load). False: no server to use."""
    deadline = time.monotonic() + timeout_s
    while running():
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        check()
        time.sleep(0.05)
    return False


def start() -> bool:
    """Start the server (non-blocking: it imports in its own process, ~10 s). Idempotent.
    False if it cannot run here (no fd passing, or it died on its own before)."""
    global _failed
    with _lock:
        if _failed:
            return False
        if pid() is not None:
            return True
        from core.engine.processes import start_quiet_resource_tracker

        start_quiet_resource_tracker()  # the server shares it: started quiet, here, first
        try:
            mp_forkserver.set_forkserver_preload(["__main__", PRELOAD_MODULE])
            mp_forkserver.ensure_running()
        except (OSError, ValueError, ImportError) as exc:
            _failed = True
            logger.warning("engine forkserver not started (%s): engines are spawned", exc)
            return False
        logger.info("engine forkserver started (pid %s), importing torch and vLLM",
                    _server()._forkserver_pid)
        return True


def stop(timeout_s: float = 2.0) -> int | None:
    """End the server (its forked engine processes are not touched); returns its pid, None if
    none ran. Blocking, briefly."""
    global _stopping
    with _lock:
        server_pid = pid()
        if server_pid is None:
            return None
        _stopping = True  # another thread that sees it gone now must not take it for a failure
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGTERM)  # no handler there: ends at once, no teardown
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                done, _status = os.waitpid(server_pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server_pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(server_pid, 0)
                break
            time.sleep(0.02)
        _forget()
        _stopping = False
        return server_pid


def _forget() -> None:
    """Clear multiprocessing's record of a server that is gone (it would otherwise wait on it)."""
    server = _server()
    if server._forkserver_alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)
    address = server._forkserver_address
    if isinstance(address, str) and address and not address.startswith("\0"):
        with contextlib.suppress(OSError):
            os.unlink(address)
    server._forkserver_address = None
    server._forkserver_alive_fd = None
    server._forkserver_pid = None


def is_forkserver(proc: psutil.Process) -> bool:
    """Whether proc is the engine forkserver. By pid: a child just forked from it carries its
    process title until vLLM renames it."""
    return proc.pid == pid()


_local = threading.local()


@contextlib.contextmanager
def forking() -> Iterator[None]:
    """Within this block, in this thread, vLLM starts its engine core from the server (if it is
    ready); elsewhere, e.g. an AsyncLLM a benchmark builds directly, vLLM's own choice stands."""
    _local.on = True
    try:
        yield
    finally:
        _local.on = False


def engine_context() -> Any | None:
    """The context vLLM should start its engine core with: the server's once it is ready."""
    return _context if getattr(_local, "on", False) and ready() else None


def use_for_vllm() -> None:
    """Make vLLM start its engine-core processes from the server in forking() blocks. Idempotent.

    vLLM takes the engine core's multiprocessing context from its get_mp_context() (spawn on the
    CPU build, fork by default on CUDA), with no setting for a forkserver; the name its engine
    utilities imported is wrapped. vLLM's own choice still runs first (it may set variables), and
    stays the one used when the server is not running. Requires vLLM to be imported."""
    global _patched
    if _patched:
        return
    from vllm.v1.engine import utils as engine_utils

    original = getattr(engine_utils, "get_mp_context", None)
    if original is None:  # another vLLM layout: its own process start stays
        logger.warning("vLLM has no get_mp_context where expected: engines are spawned")
        _patched = True
        return

    def get_mp_context() -> Any:
        chosen = original()
        forked = engine_context()
        return forked if forked is not None else chosen

    engine_utils.get_mp_context = get_mp_context
    _patched = True


