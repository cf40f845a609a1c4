"""The composition root: builds the core objects once, for the GUI and the headless commands.

Everything is created here and handed to its users (constructor injection); nothing else
looks objects up globally.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from core import paths
from core.chat_session import ChatSession
from core.config import AppConfig, load_app_config, with_remote
from core.engine.base import Engine
from core.engine.page_cache import prefetch_model_files
from core.history_store import HistoryStore
from core.manager.alert_policy import AlertReactor, Reaction
from core.manager.fit import CPU_MIN_UTILIZATION, estimator_fit
from core.manager.manager import ModelManager
from core.manager.memory_wait import GpuSnapshotProbe, HostMemoryProbe, MemoryProbe, reading_of
from core.manager.plan import DeviceReading, effective_cascade
from core.models.catalog import Catalog, ModelEntry
from core.models.estimator import Estimator, EstimatorSettings
from core.models.on_disk import with_models_on_disk
from core.router.selection import HardwareState, Router
from core.routing_log import RoutingLog
from core.scheduler import RequestScheduler
from core.telemetry.activity import EngineActivity
from core.telemetry.alerts import AlertEvent
from core.telemetry.config import AlertPolicy
from core.telemetry.history import TelemetryHistory
from core.telemetry.host import HostSampler
from core.telemetry.sampler import Sampler, SerializedDevice, open_gpu_devices
from core.telemetry.snapshot import GpuSnapshot, Sample
from core.uptime import UptimeRecorder

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "demo-tiny-a"
CUSTOM_MODEL_ID = "custom"

# A line for the app's event log (level, text): the Events tab, a soak's report, the CLI.
EventLineListener = Callable[[str, str], None]
EngineFactory = Callable[[ModelEntry], Engine]

# Closing (app exit, end of a command) finishes within this, whatever the engine is doing, so
# the process exits within 3 s: what runs is cancelled, the engine is shut down, and processes
# that have not gone by CLOSE_FORCE_AT_S before the deadline are ended by force.
CLOSE_DEADLINE_S = 2.5
CLOSE_FORCE_AT_S = 1.0
# At close vLLM's processes get this long after SIGTERM, then SIGKILL: nothing in them needs
# saving, and a graceful engine teardown takes seconds.
ENGINE_EXIT_GRACE_S = 0.5


def nvidia_gpu_present() -> bool:
    """Whether NVML finds a real NVIDIA GPU (so the CUDA engine, not the CPU build, runs)."""
    from core.telemetry.nvml_device import NvmlDevices

    found = NvmlDevices.open()
    if found is None:
        return False
    present = bool(found.devices)
    found.close()
    return present


def _max_context_of(model_dir: Path, cap: int = 8192) -> int | None:
    """The context a model directory declares (config.json), capped: the fit lowers it further."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        declared = int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return min(declared, cap) if declared > 0 else None


def make_engine(entry: ModelEntry, activity: EngineActivity, config: AppConfig) -> Engine:
    """The engine that can load this catalog entry."""
    if entry.is_remote:
        from core.engine.base import EngineError
        from core.engine.remote_engine import RemoteEngine

        if config.remote is None:
            raise EngineError("No remote endpoint is configured (add a `remote:` section).")
        return RemoteEngine(config.remote)
    from core.engine.vllm_engine import VllmEngine

    return VllmEngine(activity=activity)


def expected_engine_start(entry: ModelEntry) -> str | None:
    """How the next load of this entry would start its engine (the ETA's history filter); None
    for a remote model."""
    if entry.is_remote:
        return None
    from core.engine.vllm_engine import expected_start

    return expected_start()


@dataclass
class Runtime:
    """The core objects of one app or command run, wired together."""

    config: AppConfig
    activity: EngineActivity
    devices: list[SerializedDevice]
    sampler: Sampler
    probe: MemoryProbe
    history_store: HistoryStore
    manager: ModelManager
    router: Router
    chat: ChatSession
    reactor: AlertReactor
    scheduler: RequestScheduler
    uptime: UptimeRecorder
    simulated: bool
    device_label: str = "host RAM (CPU engine)"  # the engine's device, for people
    engines: weakref.WeakSet[Engine] = field(default_factory=weakref.WeakSet)
    # Child processes that were there before this runtime: not its engines, close() spares them.
    children_before: set[int] = field(default_factory=set)
    _event_listeners: list[EventLineListener] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _pending_events: list[AlertEvent] = field(default_factory=list)
    _reaction: asyncio.Task[None] | None = None
    _last_reaction: tuple[str, str, str | None] | None = None

    @classmethod
    def create(cls, config_file: str | Path | None = None, simulate: str | None = None,
               history_path: Path | None = None,
               engine_factory: EngineFactory | None = None) -> Runtime:
        """Read the configuration and build every core object (no model is loaded yet).

        engine_factory (tests) replaces make_engine."""
        from core.engine.processes import child_pids

        children_before = child_pids()
        config = load_app_config(config_file)
        # Models already on this machine (HF cache, models folder) load like catalog entries.
        config = replace(config, catalog=with_models_on_disk(config.catalog, paths.models_dir()))
        activity = EngineActivity()
        devices = [SerializedDevice(d) for d in open_gpu_devices(simulate, activity)]
        sampler = Sampler(devices, HostSampler(), config.monitoring.hardware_monitoring)
        # The engine lives where the memory is: the first GPU, else (CPU build) the host's RAM.
        # The GPU is read by the sampler alone: the probe asks it for a sample taken now.
        probe: MemoryProbe = (GpuSnapshotProbe(lambda: sampler.fresh().gpus[0]) if devices
                              else HostMemoryProbe())
        store = HistoryStore(history_path)
        on_host = not devices
        # vLLM's CPU build: its "device" is host RAM and its worker's own memory is overhead.
        estimator = Estimator(config.catalog, EstimatorSettings.for_cpu_engine() if on_host
                              else EstimatorSettings())
        # Where the engine really runs decides the utilization floor: under --simulate on a
        # machine without a GPU the policy sees the simulated card, but vLLM's CPU build still
        # reserves that fraction of host memory and needs at least the floor to start.
        engine_on_cpu = on_host or not nvidia_gpu_present()
        fit = estimator_fit(estimator,
                            min_utilization=CPU_MIN_UTILIZATION if engine_on_cpu else 0.0,
                            size_kv_cache=engine_on_cpu)
        router = Router(config.router, config.catalog, estimator=estimator)
        # The local tier (demo models built here) goes before the remote endpoint, so a machine
        # with only demo models still falls back from one to the other.
        cascade = effective_cascade(config.fallback_cascade,
                                    config.router.selection.local_tier)
        engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # for close(): every engine made
        # runtime.config, read when an engine is made: Settings may have changed the remote
        # endpoint since the start (the name is bound below, before any engine is made).
        factory = engine_factory or (lambda entry: make_engine(entry, activity, runtime.config))

        def new_engine(entry: ModelEntry) -> Engine:
            engine = factory(entry)
            engines.add(engine)
            return engine

        manager = ModelManager(config.catalog, config.monitoring.model_switching, probe,
                               new_engine, store, activity, fit, cascade=cascade,
                               prefetch=prefetch_model_files,
                               expected_start=(expected_engine_start if engine_factory is None
                                               else lambda entry: None))
        label = sampler.fresh().gpus[0].name if devices else "host RAM (CPU engine)"
        # Every generation (playground, CLI, local API) is admitted by this one scheduler.
        scheduler = RequestScheduler(manager, max_queue=config.server.max_queue)
        tracking = config.monitoring.performance_tracking
        chat = ChatSession(manager, router, store, probe, device_label=label,
                           scheduler=scheduler,
                           routing_log=RoutingLog(store, enabled=tracking.track_routing),
                           track_tokens_per_s=tracking.track_tokens_per_s)
        reactor = AlertReactor(manager, config.monitoring.hardware_monitoring)
        uptime = UptimeRecorder(store, lambda: manager.active_model,
                                lambda: manager.state.switching_to is not None)
        manager.subscribe(uptime.on_event)
        runtime = cls(config, activity, devices, sampler, probe, store, manager, router, chat,
                      reactor, scheduler, uptime, simulated=bool(simulate), device_label=label,
                      engines=engines, children_before=children_before)
        return runtime

    @property
    def history(self) -> TelemetryHistory:
        return self.sampler.history

    def gpu_snapshots(self) -> list[GpuSnapshot]:
        return list((self.sampler.latest or self.sampler.fresh()).gpus)

    def latest_reading(self) -> DeviceReading:
        """The engine's device as the sampler last read it, for displays (the Models tab plans
        every row against it; no device read per row). Host RAM: read now (psutil)."""
        if not self.devices:
            return self.probe.read()
        return reading_of((self.sampler.latest or self.sampler.fresh()).gpus[0])

    def refresh_models_on_disk(self) -> None:
        """Offer models that appeared since the start (a download, an added directory)."""
        self.set_catalog(with_models_on_disk(self.manager.catalog, paths.models_dir()))

    def set_catalog(self, catalog: Catalog) -> None:
        """Hand a new catalog to everything that reads it (the manager and the router)."""
        self.manager.catalog = catalog
        self.router.catalog = catalog

    def hardware_state(self) -> HardwareState:
        """The engine's device now, as the estimator's verdicts need it (download dialog)."""
        reading = self.probe.read()
        return HardwareState(reading.free_bytes or 0, reading.total_bytes or 1,
                             reading.temperature_c, self.device_label,
                             host_memory=not self.devices)

    @property
    def alert_policy(self) -> str:
        """"act": alerts change the model or concurrency; "advise": they only produce advice."""
        return self.reactor.monitoring.policy

    def set_alert_policy(self, policy: str) -> None:
        """Switch the alert reactor between "act" and "advise" (the GUI's policy switch)."""
        if policy not in tuple(AlertPolicy):
            raise ValueError(f"alert policy must be 'act' or 'advise', got {policy!r}")
        self.reactor.monitoring = self.reactor.monitoring.model_copy(
            update={"policy": AlertPolicy(policy)})

    def apply_config(self, new: AppConfig) -> None:
        """Settings changed while running (the settings dialog): what can change live does;
        the catalog (with the models found on disk) stays, its remote entry following the
        `remote:` section (disabled once it is removed). The history window, start-up options
        and the local API's address take effect where their owners read them."""
        from core.manager.plan import SafetyLimits

        hm = new.monitoring.hardware_monitoring
        self.sampler.interval_seconds = hm.interval_seconds
        self.sampler.alerts.reconfigure(hm)
        self.reactor.monitoring = hm
        switching = new.monitoring.model_switching
        self.manager.switching = switching
        self.manager.limits = SafetyLimits.from_settings(switching)
        self.router.set_buffer_gib(new.router.selection.buffer_gib)
        catalog = self.config.catalog
        if new.remote != self.config.remote:
            catalog = with_remote(catalog, new.remote)
            self.set_catalog(with_remote(self.manager.catalog, new.remote))
        self.config = replace(new, catalog=catalog)

    def add_event_listener(self, listener: EventLineListener) -> None:
        self._event_listeners.append(listener)

    def post_event(self, level: str, text: str) -> None:
        """Tell the event log's listeners (not Python logging: `logger` is that)."""
        for listener in self._event_listeners:
            listener(level, text)

    def start(self) -> None:
        """Start sampling; alerts reach the reactor on the event loop that called start().

        Engines left running by a crash of an earlier run hold memory: end them first.
        """
        from core.engine.processes import reap_orphan_engines

        for warning in self.config.warnings:  # already on stderr; the GUI's events show it too
            self.post_event("warning", warning)
        reaped = reap_orphan_engines()
        if reaped:
            self.post_event("warning", f"ended {len(reaped)} engine process(es) left by an earlier "
                                f"crash: {', '.join(map(str, reaped))}")
        self._loop = asyncio.get_event_loop()
        self.sampler.subscribe(self._on_sample)
        self.sampler.start()

    def _on_sample(self, sample: Sample, events: list[AlertEvent]) -> None:
        # Sampler thread: hand the alert events to the loop thread, where the manager lives.
        # Every tick goes through, even without new events: "persists for N s" needs the ticks.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._react, events)

    def _react(self, events: list[AlertEvent]) -> None:
        self.uptime.observe()  # on the loop, where the manager lives: an unload has no event
        # One reaction at a time: a reaction may switch models (seconds); events that arrive
        # meanwhile wait for the next tick instead of starting competing reactions.
        self._pending_events.extend(events)
        if self._reaction is not None and not self._reaction.done():
            return
        pending, self._pending_events = self._pending_events, []
        self._reaction = asyncio.ensure_future(self._handle_alerts(pending))
        self._tasks.add(self._reaction)
        self._reaction.add_done_callback(self._tasks.discard)

    async def _handle_alerts(self, events: list[AlertEvent]) -> None:
        try:
            reactions = await (self.reactor.handle(events) if events else self.reactor.tick())
            for reaction in reactions:
                key = (reaction.action, reaction.kind, reaction.target)
                if reaction.action != Reaction.NONE and key != self._last_reaction:
                    verb = "action" if reaction.applied else "advice"
                    self.post_event(verb, f"{reaction.kind}: {reaction.reason}")
                self._last_reaction = key
        except Exception as exc:  # noqa: BLE001 - an alert reaction must never kill the loop
            self.post_event("error", f"reacting to an alert failed: {exc}")

    async def autoload(self, model_path: str | Path | None = None,
                       model_id: str | None = None) -> None:
        """Load the model given on the command line, the catalog model model_id (start-up's
        "load the last model"), or the built-in demo model."""
        try:
            target = DEFAULT_MODEL
            if model_path is not None:
                target = self._register_custom(Path(model_path))
            elif model_id is not None and model_id in self.manager.catalog:
                target = model_id
            if self.manager.catalog.get(target).priority == "DEMO":  # built here, if missing
                from core.engine.demo_model import ensure_demo_models

                self.post_event("info", "building the demo models if missing…")
                await asyncio.get_running_loop().run_in_executor(None, ensure_demo_models)
            result = await self.manager.switch_to(target, reason="manual")
            if result.ok:
                self.post_event("info", f"{result.active} is ready ({result.total_s:.1f} s)")
            else:
                self.post_event("error", f"could not load {target}: " + "; ".join(result.errors))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app stays usable
            self.post_event("error", f"loading the first model failed: {exc}")

    def _register_custom(self, path: Path) -> str:
        """Add a catalog entry for a model directory given with --model."""
        # The demo entry is only a template: the estimator and vLLM read the directory's own
        # config.json (architecture, dtype, quantization). It must not be labelled a demo, nor
        # forced to the demo's float32.
        base = self.config.catalog.get(DEFAULT_MODEL)
        entry = base.model_copy(update={
            "id": CUSTOM_MODEL_ID, "display_name": path.name, "path": path.resolve(),
            "priority": "CUSTOM", "quantization": "none",
            "default_context": _max_context_of(path) or base.default_context})
        self.set_catalog(self.config.catalog.with_entry(entry))
        return CUSTOM_MODEL_ID

    async def close(self, deadline_s: float = CLOSE_DEADLINE_S) -> None:
        """Stop sampling, cancel switches and generations, shut the engine down; within
        deadline_s whatever the engine does. Idempotent.

        Engines are told to hurry (SIGTERM, SIGKILL after ENGINE_EXIT_GRACE_S). If the clean
        close has not finished CLOSE_FORCE_AT_S before the deadline (a vLLM start that cannot be
        interrupted, a shutdown that hangs), every engine process is ended by force; a thread
        still inside vLLM is left behind (an exiting process does not wait for it: see
        core.process_exit). History rows are committed as each is written; the store is closed
        only once nothing can write to it any more.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        self.uptime.end()  # the session ends now; the unloads of closing are not outages
        self.sampler.stop(timeout=min(0.5, deadline_s / 4))
        for task in list(self._tasks):
            task.cancel()
        # Waiting requests end first (they would otherwise start a switch while closing).
        await asyncio.wait({asyncio.ensure_future(self.scheduler.close())},
                           timeout=max(0.0, min(0.5, deadline - loop.time())))
        from core.engine.processes import end_engine_processes
        from core.engine.vllm_engine import VllmEngine

        for engine in list(self.engines):
            if isinstance(engine, VllmEngine):
                engine.hurry(ENGINE_EXIT_GRACE_S)
        closing = asyncio.ensure_future(self.manager.close())
        closing.set_name("runtime-close")
        await asyncio.wait({closing}, timeout=max(0.0, deadline - loop.time() - CLOSE_FORCE_AT_S))
        if not closing.done():
            self.post_event("warning", "the engine did not shut down in time: ending it by force")
        # Also after a clean close: a cancelled start may have spawned a process meanwhile.
        ended = await loop.run_in_executor(None, end_engine_processes, self.children_before,
                                           ENGINE_EXIT_GRACE_S)
        if ended and closing.done():
            logger.info("ended leftover engine process(es) %s", ended)
        if not closing.done():
            await asyncio.wait({closing}, timeout=max(0.0, deadline - loop.time()))
        if not closing.done():
            closing.cancel()
            logger.warning("closing the model manager did not finish within %.1f s", deadline_s)
            return  # the history store stays open for a write still to come
        if not closing.cancelled() and closing.exception() is not None:
            self.post_event("error", f"shutting the engine down failed: {closing.exception()}")
        from core.engine.processes import reap_exited_children

        reap_exited_children(self.children_before)
        for device in self.devices:
            device.close()
        self.history_store.close()
