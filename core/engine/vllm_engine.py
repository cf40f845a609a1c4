"""The local engine: vLLM V1 ``AsyncLLM`` with its engine core in a separate process.

- load() builds the engine in a worker thread (importing vLLM and starting the engine take tens of
  seconds) so the event loop keeps running; vLLM's start-up failures become typed errors.
- generate() applies the model's chat template, streams DELTA outputs and splits Qwen3 reasoning.
- A watchdog polls the engine processes every 0.5 s; if one dies the open streams end with
  EngineDiedError within about a second, the rest of the processes are ended and the engine
  reports unhealthy and unloaded.
- shutdown() returns only when every engine process (and their children) is gone.

Setting up vLLM's processes (logging config and file, environment, the import) is
core.engine.vllm_process; finding and ending them is core.engine.processes.

Scripts that use this must guard their entry point with ``if __name__ == "__main__":`` because
vLLM spawns its engine process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from core import paths
from core.engine import forkserver
from core.engine.base import (
    EngineDiedError,
    EngineError,
    EngineInfo,
    EngineTimeoutError,
    GenerationDelta,
    GenerationRequest,
    LoadSpec,
    PromptTooLongError,
)
from core.engine.errors import map_vllm_error
from core.engine.load_phases import (
    LoadMarks,
    breakdown,
    current_phase,
    parse_log,
    process_started_at,
)
from core.engine.model_dir import check_model_dir
from core.engine.processes import (
    EngineProcessRegistry,
    alive,
    child_pids,
    end_processes,
    new_engine_processes,
    start_quiet_resource_tracker,
)
from core.engine.thinking import OPEN_TAG, ThinkingSplitter
from core.engine.vllm_process import (
    console_errors_only,
    import_vllm,
    read_log,
    rotated_log,
    set_engine_environment,
)
from core.models.estimator import architecture_from_config, kv_bytes_per_token
from core.telemetry.activity import EngineActivity

logger = logging.getLogger(__name__)

_END = object()
# Prompts longer than this are tokenized in the worker thread, not on the event loop.
_INLINE_TOKENIZE_CHARS = 20_000


def _checkpoint_dtype(model_dir: str) -> str | None:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def engine_dtype(spec: LoadSpec) -> str:
    """The dtype passed to vLLM. "auto" keeps a float32 checkpoint float32: vLLM's CPU backend would
    downcast it to bfloat16, which killed the worker with SIGILL on the build machine."""
    if spec.dtype == "auto" and _checkpoint_dtype(spec.path) == "float32":
        return "float32"
    return spec.dtype


def engine_enforce_eager(spec: LoadSpec) -> bool:
    """The model's own choice, else the device's default. On a GPU, compiled with CUDA graphs as
    the decision record asks (enforce_eager=False; vLLM keeps the compiled graphs in its cache,
    ~/.cache/vllm). On vLLM's CPU build, eager: compiled, every load spent 7-9 s more in its
    profiling and warm-up even with the compile cache warm, for a 1.1-1.2x faster decode
    (tests/benchmarks/bench_switch.py and bench_eager.py). Call with vLLM imported."""
    if spec.enforce_eager is not None:
        return spec.enforce_eager
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


# Seconds an unload gives vLLM's processes to end cleanly before vLLM kills their tree. They
# hold nothing worth a slow teardown (the OS frees their memory either way), and on a busy
# machine their interpreters took 4-5 s more to wind down: every switch waited for it.
UNLOAD_GRACE_S = 2.0

# vLLM hands the KV cache out in blocks (16 tokens on the CPU build, up to a few hundred on
# others): a few spare blocks so the fitted context always fits whole.
KV_CACHE_MARGIN_TOKENS = 512


def kv_cache_bytes(spec: LoadSpec) -> int | None:
    """vLLM's kv_cache_memory_bytes for spec.kv_cache_tokens tokens of this model (its
    config.json, the dtype passed to vLLM); None: not sized, or the config cannot say."""
    if spec.kv_cache_tokens is None:
        return None
    try:
        config = json.loads((Path(spec.path) / "config.json").read_text(encoding="utf-8"))
        arch = architecture_from_config(config, None)
    except (OSError, ValueError, TypeError):
        return None
    dtype_bytes = 2 if engine_dtype(spec) in ("bfloat16", "float16", "half") else 4
    return kv_bytes_per_token(arch, dtype_bytes) * (spec.kv_cache_tokens + KV_CACHE_MARGIN_TOKENS)


class StartCancelledError(EngineError):
    """The load was cancelled before vLLM's engine was started (or before it was handed over)."""

    def __init__(self) -> None:
        super().__init__("The load was cancelled.")


class _StartControl:
    """Shared by a load and its start thread: a cancelled load stops the thread at the next
    checkpoint, and says whether the thread may already be spawning engine processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._spawning = False

    def cancel(self) -> bool:
        """Loop side. True if the thread has begun spawning vLLM's engine processes."""
        with self._lock:
            self._cancelled = True
            return self._spawning

    def begin_spawning(self) -> None:
        """Thread side, right before vLLM's constructor: stop here if cancelled."""
        with self._lock:
            if self._cancelled:
                raise StartCancelledError()
            self._spawning = True

    def check(self) -> None:
        with self._lock:
            if self._cancelled:
                raise StartCancelledError()


def expected_start() -> str:
    """How a VllmEngine's load started now would start its engine (base.ENGINE_STARTS), for the
    switch's ETA: forked once the engine forkserver is ready, after a wait while it imports."""
    if not forkserver.running():
        return "spawned"
    return "forked" if forkserver.ready() else "forked_after_wait"


class VllmEngine:
    """One model on vLLM's AsyncLLM. Implements core.engine.base.Engine.

    Arguments are injected for tests and the manager: ``registry`` records engine pids for orphan
    reaping, ``activity`` is told about loading and streams, ``extra_engine_args`` go straight to
    vLLM's AsyncEngineArgs (e.g. ``kv_cache_memory_bytes``). With ``preforked`` (the default),
    a successful load starts the engine forkserver (core.engine.forkserver) if it is not running,
    and the next loads fork vLLM's engine core from it instead of spawning it.
    """

    def __init__(
        self,
        *,
        registry: EngineProcessRegistry | None = None,
        activity: EngineActivity | None = None,
        log_dir: Path | None = None,
        extra_engine_args: Mapping[str, Any] | None = None,
        watchdog_interval_s: float = 0.5,
        shutdown_timeout_s: float = UNLOAD_GRACE_S,
        preforked: bool = True,
    ) -> None:
        self._preforked = preforked
        self._registry = registry if registry is not None else EngineProcessRegistry()
        self._activity = activity
        self._log_dir = log_dir if log_dir is not None else paths.logs_dir()
        self._extra = dict(extra_engine_args or {})
        self._watchdog_interval_s = watchdog_interval_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-engine")
        self._llm: Any = None
        self._tokenizer: Any = None
        self._spec: LoadSpec | None = None
        self._procs: list[psutil.Process] = []
        # vLLM's multiprocessing objects for the processes it started, kept from the load: after
        # a death vLLM may drop its own list before we read an exit code from them.
        self._started: dict[int, Any] = {}
        self._streams: dict[str, asyncio.Queue[Any]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._dead: EngineDiedError | None = None
        self._cleanup: asyncio.Task[None] | None = None
        self.load_s: float | None = None
        self.log_file: Path | None = None
        # Seconds per phase of the last load (core.engine.load_phases), and who hears, while a
        # load runs, which of those phases it is in (the manager's progress text and ETA).
        self.load_phases: dict[str, float] = {}
        self.engine_start: str | None = None  # how the last load started (base.ENGINE_STARTS)
        self.on_load_phase: Callable[[str], None] | None = None
        self._log_offset = 0

    # -- protocol ------------------------------------------------------------------------------

    async def load(self, spec: LoadSpec) -> None:
        """Start vLLM for spec; raises a typed EngineError (the model is then not loaded)."""
        if self._llm is not None:
            raise EngineError(f"This engine already holds {self._spec and self._spec.model_id}; "
                              "shut it down before loading another model.")
        check_model_dir(spec.path)
        loop = asyncio.get_running_loop()
        if self._activity is not None:
            self._activity.set_loading(True, spec.model_id)
        started = time.monotonic()
        marks: dict[str, float] = {"started": time.time()}
        before = child_pids()
        control = _StartControl()
        self.load_phases = {}
        starting = loop.run_in_executor(self._executor, self._start, spec, control, marks)
        progress = asyncio.create_task(self._report_progress(starting, marks),
                                       name=f"vllm-load-progress-{spec.model_id}")
        try:
            llm, tokenizer, procs = await asyncio.shield(starting)
        except asyncio.CancelledError:
            await self._abandon_start(starting, before, control)
            raise
        finally:
            progress.cancel()
            if self._activity is not None:
                self._activity.set_loading(False)
        self.load_s = time.monotonic() - started
        self.load_phases = self._phases(marks, procs)
        self._llm, self._tokenizer, self._procs, self._spec = llm, tokenizer, procs, spec
        self._started = {p.pid: p for p in _vllm_processes(llm) if getattr(p, "pid", None)}
        self._dead = None
        if self._activity is not None:
            self._activity.set_loaded(spec.model_id, self._loaded_bytes())
        self._watchdog = asyncio.create_task(self._watch(), name=f"vllm-watchdog-{spec.model_id}")
        logger.info("loaded %s in %.1f s (engine pids %s): %s", spec.model_id, self.load_s,
                 self.pids(), ", ".join(f"{k} {v:.2f} s" for k, v in self.load_phases.items()))

    def _new_log_text(self) -> str:
        return read_log(self.log_file, self._log_offset) if self.log_file else ""

    async def _report_progress(self, starting: asyncio.Future[Any],
                               marks: dict[str, float]) -> None:
        """While the start thread runs, tell on_load_phase which phase the load is in: ours
        before and after vLLM's constructor, vLLM's log's in between."""
        said = ""
        while not starting.done():
            listener = self.on_load_phase
            if listener is not None:
                if "constructed" in marks:
                    phase = "tokenizer"
                elif "constructing" in marks:
                    phase = current_phase(parse_log(self._new_log_text()))
                else:
                    phase = "prepare"
                if phase != said:
                    said = phase
                    with contextlib.suppress(Exception):  # a display error never stops a load
                        listener(phase)
            await asyncio.sleep(0.25)

    def _phases(self, marks: dict[str, float], procs: list[psutil.Process]) -> dict[str, float]:
        """The breakdown of the load that just ended: vLLM's log since it began, our marks."""
        # The engine core starts first, then its worker (spawned by it, or forked from the
        # forkserver like the engine core: parentage does not tell them apart).
        started = sorted((at, proc.pid) for proc in procs
                         if (at := process_started_at(proc.pid)) is not None)
        (core_at, core), (worker_at, worker) = (started + [(None, None)] * 2)[:2]
        load = LoadMarks(marks["started"], marks["constructing"], marks["constructed"],
                         marks["ended"], core_at, worker_at, core, worker)
        return breakdown(load, parse_log(self._new_log_text()))

    async def _abandon_start(self, starting: asyncio.Future[Any], before: set[int],
                             control: _StartControl) -> None:
        """A cancelled load: no model may come up behind the caller's back.

        The start thread cannot be interrupted. Still importing vLLM, it is only told to stop
        before it spawns anything (waiting for the import would hold up an app's exit for
        seconds). Already starting vLLM, it gets its engine processes ended as they appear, which
        makes vLLM's constructor fail fast; whatever it still returns is shut down.
        """
        # Nobody else reads the thread's outcome now (asyncio would warn that it was never read).
        starting.add_done_callback(lambda f: f.cancelled() or f.exception())
        if not control.cancel():
            return
        deadline = time.monotonic() + max(30.0, self._shutdown_timeout_s)
        while not starting.done() and time.monotonic() < deadline:
            for proc in new_engine_processes(before):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    proc.kill()  # no waiting here: the loop keeps running
            await asyncio.wait({starting}, timeout=0.2)
        if not starting.done():
            logger.warning("a cancelled vLLM start did not end within the deadline")
            return
        if starting.cancelled() or starting.exception() is not None:
            return
        llm, _tokenizer, procs = starting.result()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._stop, [llm], procs)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the reply as deltas with cumulative token counts and timings."""
        return self._generate(request)

    async def abort(self, request_id: str) -> None:
        """Stop a running request; its stream ends with finish_reason "abort"."""
        queue = self._streams.get(request_id)
        if queue is not None:
            queue.put_nowait(("abort", None))
        if self._llm is not None and self._dead is None:
            await self._llm.abort(request_id)

    async def shutdown(self) -> None:
        """End the engine and every engine process; returns when they are gone."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._cleanup is not None:
            await self._cleanup
            self._cleanup = None
        for queue in self._streams.values():
            queue.put_nowait(("error", EngineError("The engine was shut down.")))
        holder, self._llm = [self._llm], None
        procs, self._procs = self._procs, []
        _stop_output_handler(holder[0])
        if holder[0] is not None or procs:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._stop, holder, procs)
        self._spec = None
        self._tokenizer = None
        if self._activity is not None:
            self._activity.set_loaded(None, 0)
        # Let the executor's thread end (an idle pool thread would outlive every engine); a
        # fresh executor starts no thread until a later load() needs one.
        self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-engine")

    def hurry(self, grace_s: float) -> None:
        """From now on shutdown() gives vLLM's processes grace_s after SIGTERM, then SIGKILL.

        For the app's exit: the engine holds nothing worth a slow teardown (the OS frees its
        memory), and waiting for it would keep the app alive for seconds."""
        self._shutdown_timeout_s = grace_s
        # vLLM then warns on stderr that it is "force killing" its processes: here that is the
        # plan, not news.
        console_errors_only()

    def is_healthy(self) -> bool:
        """Loaded, not dead, and every engine process still running."""
        if self._llm is None or self._dead is not None:
            return False
        gone = [p.pid for p in self._procs if not alive(p)]
        if gone or getattr(self._llm, "errored", False):
            # Seen here before the watchdog's next poll: `died` says how, for whoever asked.
            self._on_death(gone)
            return False
        return True

    def pids(self) -> tuple[int, ...]:
        """The engine processes this engine started (engine core, workers)."""
        return tuple(p.pid for p in self._procs)

    # -- extras --------------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        spec = self._spec
        return EngineInfo(model_id=spec.model_id if spec else "", kind="vllm",
                          max_model_len=spec.max_model_len if spec else None, pids=self.pids())

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def died(self) -> EngineDiedError | None:
        """The error that ended the engine, if its processes died."""
        return self._dead

    # -- worker-thread parts -------------------------------------------------------------------

    def _start(self, spec: LoadSpec, control: _StartControl, marks: dict[str, float]
               ) -> tuple[Any, Any, list[psutil.Process]]:
        config_file, log_file, offset = rotated_log(self._log_dir)
        self.log_file, self._log_offset = log_file, offset
        # A previous crash of the app may have left engines holding memory (vllm #55510).
        self._registry.reap_orphans()
        set_engine_environment(config_file)
        before = child_pids()
        try:
            # Before the engine exists: the heap frozen after the imports must not hold its
            # objects (they stay collectable).
            import_vllm()
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            if self._preforked:
                forkserver.use_for_vllm()  # used once the forkserver is ready (below)

            options: dict[str, Any] = dict(
                model=spec.path,
                served_model_name=spec.model_id,
                max_model_len=spec.max_model_len,
                gpu_memory_utilization=spec.memory_utilization,
                quantization=spec.quantization,
                dtype=engine_dtype(spec),
                trust_remote_code=spec.trust_remote_code,
                enforce_eager=engine_enforce_eager(spec),
                enable_prefix_caching=spec.enable_prefix_caching,
                enable_chunked_prefill=spec.enable_chunked_prefill,
                disable_log_stats=True,
            )
            if spec.max_num_seqs:
                options["max_num_seqs"] = spec.max_num_seqs
            kv_bytes = kv_cache_bytes(spec)
            if kv_bytes is not None:
                options["kv_cache_memory_bytes"] = kv_bytes
            options.update(self._extra)
            args = AsyncEngineArgs(**options)
            self.engine_start = "spawned"
            if self._preforked:
                was_ready = forkserver.ready()
                if forkserver.wait_ready(control.check):
                    self.engine_start = "forked" if was_ready else "forked_after_wait"
            control.begin_spawning()  # a load cancelled during the imports ends here
            start_quiet_resource_tracker()
            marks["constructing"] = time.time()
            with forkserver.forking() if self._preforked else contextlib.nullcontext():
                llm = AsyncLLM.from_engine_args(args)
            marks["constructed"] = time.time()
        except StartCancelledError:
            raise
        except BaseException as exc:
            leftovers = new_engine_processes(before)
            if leftovers:
                end_processes(leftovers, timeout_s=5.0)
            # The half-built AsyncLLM lives on in the traceback's frames; left to interpreter
            # exit its __del__ fails noisily ("'NoneType' object is not callable"). Free it now.
            traceback.clear_frames(exc.__traceback__)
            gc.collect()
            text = read_log(log_file, offset)
            mapped = map_vllm_error(exc, text, requested_len=spec.max_model_len)
            if mapped is not None:
                raise mapped from exc
            raise EngineError(f"vLLM could not start {spec.model_id}: {exc}") from exc
        procs = new_engine_processes(before)
        self._registry.add(procs)
        try:
            # vLLM already loaded the model's tokenizer: a second one would cost a load each time.
            tokenizer = getattr(llm, "tokenizer", None) or AutoTokenizer.from_pretrained(
                spec.path, trust_remote_code=spec.trust_remote_code)
            control.check()  # cancelled while vLLM started: nobody would own this engine
        except BaseException:
            self._stop([llm], procs)
            raise
        marks["ended"] = time.time()
        if self._preforked:
            # Started after a load, not before: it imports with the environment vLLM set up in
            # this process for that load, which is what the next loads will have as well. Here,
            # not on the loop: starting a process from this one takes tens of milliseconds.
            forkserver.start()
        return llm, tokenizer, procs

    def _stop(self, holder: list[Any], procs: list[psutil.Process]) -> None:
        """Shut vLLM down and end its processes. holder is emptied so the AsyncLLM can be freed
        here: left to the interpreter's exit, its __del__ fails noisily."""
        llm = holder.pop() if holder else None
        if llm is not None:
            try:
                llm.shutdown(timeout=self._shutdown_timeout_s)
            except Exception:  # the processes are ended below whatever happened
                logger.exception("vLLM shutdown raised; ending its processes directly")
            del llm
            gc.collect()  # AsyncLLM sits in reference cycles
        # All of them, also those vLLM already killed: they are reaped there (no zombie stays).
        still = end_processes(procs, timeout_s=min(5.0, self._shutdown_timeout_s))
        if still:
            raise EngineTimeoutError(f"Engine processes {still} did not exit.")
        self._registry.remove(p.pid for p in procs)

    def _loaded_bytes(self) -> int:
        total = 0
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    # -- streaming -----------------------------------------------------------------------------

    def _render_prompt(self, request: GenerationRequest) -> tuple[list[int], bool]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        # enable_thinking left out: the template's own default decides.
        options = {} if request.thinking is None else {"enable_thinking": request.thinking}
        prompt: str = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **options)
        ids: list[int] = self._tokenizer.encode(prompt, add_special_tokens=False)
        return ids, prompt.rstrip().endswith(OPEN_TAG)

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        if self._dead is not None:
            raise self._dead
        if self._llm is None or self._spec is None:
            raise EngineError("No model is loaded.")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        spec, llm = self._spec, self._llm
        request_id = request.request_id or uuid.uuid4().hex
        started = time.monotonic()
        if sum(len(m.content) for m in request.messages) > _INLINE_TOKENIZE_CHARS:
            loop = asyncio.get_running_loop()
            ids, in_thinking = await loop.run_in_executor(None, self._render_prompt, request)
        else:
            ids, in_thinking = self._render_prompt(request)
        if len(ids) >= spec.max_model_len:
            raise PromptTooLongError(len(ids), spec.max_model_len)
        params = SamplingParams(
            max_tokens=max(1, min(request.max_tokens, spec.max_model_len - len(ids))),
            temperature=request.temperature, top_p=request.top_p, top_k=request.top_k,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty, seed=request.seed,
            ignore_eos=request.ignore_eos, stop=list(request.stop) or None,
            output_kind=RequestOutputKind.DELTA)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = queue
        pump = asyncio.create_task(
            self._pump(llm.generate(TokensPrompt(prompt_token_ids=ids), params, request_id),
                       queue),
            name=f"vllm-stream-{request_id}")
        splitter = ThinkingSplitter(start_in_thinking=in_thinking)
        tokens = 0
        first: float | None = None
        finished = False
        if self._activity is not None:
            self._activity.stream_started()
        try:
            while not finished:
                kind, item = await queue.get()
                if kind == "error":
                    if isinstance(item, EngineDiedError) and self._llm is llm:
                        # vLLM noticed the death before the watchdog did: same outcome.
                        self._on_death([p.pid for p in self._procs if not alive(p)])
                        raise self._dead or item
                    raise item
                if kind == "abort" or kind == "end":
                    rest = splitter.flush()
                    finished = True
                    yield GenerationDelta(rest.text, rest.thinking, tokens,
                                          time.monotonic() - started, first, True,
                                          "abort" if kind == "abort" else None, len(ids))
                    break
                out = item.outputs[0]
                tokens += len(out.token_ids)
                now = time.monotonic()
                if first is None and tokens:
                    first = now - started
                part = splitter.feed(out.text)
                reason = out.finish_reason if item.finished else None
                if item.finished:
                    rest = splitter.flush()
                    part = type(part)(part.thinking + rest.thinking, part.text + rest.text)
                    finished = True
                yield GenerationDelta(part.text, part.thinking, tokens, now - started, first,
                                      item.finished, reason, len(ids))
        finally:
            self._streams.pop(request_id, None)
            if self._activity is not None:
                self._activity.stream_ended()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            if not finished and self._llm is llm and self._dead is None:
                with contextlib.suppress(Exception):
                    await llm.abort(request_id)

    @staticmethod
    async def _pump(stream: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
        try:
            async for out in stream:
                queue.put_nowait(("out", out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure reaches the consumer, typed
            queue.put_nowait(("error", _map_stream_error(exc)))
        else:
            queue.put_nowait(("end", None))

    async def _watch(self) -> None:
        while self._dead is None:
            await asyncio.sleep(self._watchdog_interval_s)
            if self._dead is not None:
                return
            gone = [p.pid for p in self._procs if not alive(p)]
            if gone or getattr(self._llm, "errored", False):
                self._on_death(gone)
                return

    def _exit_status(self, pid: int) -> str:
        """How an engine process ended: "exit code N" or "signal SIGKILL" (best effort)."""
        code: int | None = None
        # vLLM's own liveness monitor may have reaped it already: its Process object keeps the
        # code (negative: the signal that ended it).
        for proc in (self._started.get(pid), *_vllm_processes(self._llm)):
            if proc is not None and getattr(proc, "pid", None) == pid:
                with contextlib.suppress(Exception):
                    code = proc.exitcode
                if code is not None:
                    break
        if code is None:
            with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                code = psutil.Process(pid).wait(timeout=0)
        if code is None:
            return "exit status unknown"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by signal {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit code {code}"

    def _on_death(self, gone: list[int]) -> None:
        if self._dead is not None:
            return
        model = self._spec.model_id if self._spec else "the model"
        what = ("; ".join(f"process {pid} {self._exit_status(pid)}" for pid in gone) if gone
                else "its engine core failed")
        self._dead = EngineDiedError(f"The engine running {model} stopped ({what}); "
                                     "the model is unloaded and the next request loads it "
                                     "again.")
        logger.error("%s", self._dead)
        for queue in self._streams.values():
            queue.put_nowait(("error", self._dead))
        self._cleanup = asyncio.create_task(self._reap_after_death(),
                                            name=f"vllm-reap-{model}")

    async def _reap_after_death(self) -> None:
        holder, self._llm = [self._llm], None
        procs, self._procs = self._procs, []
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._stop, holder, procs)
        except EngineError:
            logger.exception("engine processes survived after a crash")
        finally:
            self._spec = None
            self._tokenizer = None
            if self._activity is not None:
                self._activity.set_loaded(None, 0)


def _stop_output_handler(llm: Any) -> None:
    """Cancel AsyncLLM's output-handler task, on the loop, before shutting vLLM down.

    vLLM's shutdown (run in our worker thread) tears the engine down first and cancels that task
    last; in between the task can see the engine gone and log "AsyncLLM output_handler failed"
    with a traceback on stderr. Nothing streams any more (our streams were ended above)."""
    handler = getattr(llm, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done():
        handler.cancel()


def _map_stream_error(exc: BaseException) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    if type(exc).__name__ == "EngineDeadError":
        return EngineDiedError("The engine process stopped during generation; the model is "
                               "unloaded and the next request loads it again.")
    return EngineError(f"Generation failed: {exc}")


def _vllm_processes(llm: Any) -> tuple[Any, ...]:
    """The multiprocessing Process objects of the engine cores vLLM started (none if unknown)."""
    resources = getattr(getattr(llm, "engine_core", None), "resources", None)
    manager = getattr(resources, "engine_manager", None)
    return tuple(getattr(manager, "processes", None) or ())
