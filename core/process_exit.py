"""The last step of the `vrampilot` process, once the app or command has closed its runtime.

It ends the process with ``os._exit`` instead of the interpreter's normal finalization, because
by then everything we own is closed (Runtime.close: engine processes are ended and reaped, the
SQLite history has committed each row as it was written and is closed; the app has synced its
QSettings), and what finalization would still do is only harm:

- it joins every ThreadPoolExecutor thread (``concurrent.futures`` registers that at exit), so a
  load cancelled during vLLM's import or constructor would hold the exit for up to 20 s;
- it runs third-party finalizers on half-torn-down modules: triton's nanobind bindings print
  hundreds of "nanobind: leaked ..." lines, and vLLM's ``AsyncLLM.__del__`` raises a TypeError.
  Neither is a real leak (the process is ending); both read like a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush what we wrote, stop multiprocessing's resource tracker, end the process."""
    logging.shutdown()  # flushes the log files (vLLM's engine log among them)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _stop_resource_tracker()
    os._exit(code)


def _stop_resource_tracker() -> None:
    # vLLM's spawned engines start multiprocessing's resource tracker, a child of ours. Stopped
    # here (close its pipe, then wait for it) it exits now and is reaped: left to notice our
    # exit by itself, it would outlive us for a moment and then stay a zombie wherever the
    # orphan's new parent does not reap.
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_fd", None) is not None:
        with contextlib.suppress(Exception):
            tracker._stop()  # type: ignore[attr-defined]  # private, no public way
