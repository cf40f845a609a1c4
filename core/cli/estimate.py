"""`vrampilot estimate MODEL [--context N] [--device PROFILE] [--json]`: will it fit, and how?

Also home of the device look-up the models and route commands share: a simulated profile at idle
(--simulate or --device), else the first NVIDIA GPU NVML finds, else host RAM as vLLM's CPU
backend sees it (its gpu_memory_utilization is a fraction of host memory).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.config import AppConfig, load_app_config
from core.models.catalog import UnknownModelError
from core.models.estimator import Estimator, EstimatorSettings, fmt_bytes
from core.router.selection import HardwareState
from core.units import MIB


def profile_state(name: str) -> HardwareState:
    """A simulated device profile at idle: its desktop baseline used, idle temperature."""
    from core.telemetry.simulated_device import load_profile

    profile = load_profile(name)
    total = profile.vram_total_bytes
    free = total - int(profile.baseline_vram_used_mib * MIB)
    temperature = profile.thermal.steady_state(profile.idle_power_w)
    return HardwareState(free, total, temperature, f"simulated {name} at idle")


def host_state() -> HardwareState:
    """Host RAM as the CPU engine sees it (total and available)."""
    import psutil

    vm = psutil.virtual_memory()
    return HardwareState(int(vm.available), int(vm.total), None, "host RAM (CPU engine)",
                         host_memory=True)


def gpu_state() -> HardwareState | None:
    """The first NVIDIA GPU's device-wide memory and temperature, or None without one."""
    from core.telemetry.sampler import open_gpu_devices

    devices = open_gpu_devices(None)
    try:
        for device in devices:
            snap = device.sample()
            if snap.vram_total_bytes and snap.vram_free_bytes is not None and not snap.lost:
                return HardwareState(snap.vram_free_bytes, snap.vram_total_bytes,
                                     snap.temperature_c, snap.name)
    finally:
        for device in devices:
            device.close()
    return None


def settings_for(state: HardwareState) -> EstimatorSettings:
    """The CPU engine's overhead model on host RAM, the GPU's elsewhere."""
    return EstimatorSettings.for_cpu_engine() if state.host_memory else EstimatorSettings()


def device_state(simulate: str | None, device: str | None = None) -> HardwareState:
    """--device or --simulate profile at idle, else the NVIDIA GPU, else host RAM."""
    name = device or simulate
    if name:
        return profile_state(name)
    return gpu_state() or host_state()


def _known_profiles() -> list[str]:
    from core.telemetry.simulated_device import known_profiles

    return known_profiles()


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "estimate", parents=[common],
        help="estimate a model's memory and the context that fits a device",
        description="Weights + KV cache + engine overhead for MODEL; whether it fits the device's "
                    "free memory with the safety buffer, the largest context that fits and the "
                    "gpu_memory_utilization to pass to vLLM.")
    parser.add_argument("model", metavar="MODEL", help="a catalog id (see `vrampilot models`)")
    parser.add_argument("--context", type=int, metavar="N",
                        help="context tokens (default: the model's default, fitted to the device)")
    parser.add_argument("--device", metavar="PROFILE",
                        help="a device profile at idle (e.g. rtx4090-laptop) instead of this "
                             "machine")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def load_config_and_state(args: argparse.Namespace, command: str,
                          device: str | None = None) -> tuple[AppConfig, HardwareState] | int:
    """The app config and the device state, or exit code 2 after a clear message."""
    config = load_app_config(args.config)
    try:
        state = device_state(args.simulate, device)
    except ValueError as exc:  # UnknownProfileError lists the known profiles
        print(f"vrampilot {command}: {exc}", file=sys.stderr)
        return 2
    return config, state


def run(args: argparse.Namespace) -> int:
    loaded = load_config_and_state(args, "estimate", args.device)
    if isinstance(loaded, int):
        return loaded
    config, state = loaded
    try:
        entry = config.catalog.get(args.model)
    except UnknownModelError as exc:
        print(f"vrampilot estimate: {exc}", file=sys.stderr)
        return 2
    if entry.is_remote:
        print(f"vrampilot estimate: {entry.id} is a remote endpoint; it uses no local memory",
              file=sys.stderr)
        return 2
    if args.context is not None and args.context < 0:
        print(f"vrampilot estimate: --context must not be negative (got {args.context})",
              file=sys.stderr)
        return 2
    buffer = config.buffer_bytes
    estimator = Estimator(config.catalog, settings_for(state))
    if args.context is None:
        est = estimator.fit_context(entry, state.total_bytes, state.free_bytes, buffer)
    else:
        est = estimator.estimate(entry, args.context, state.total_bytes, state.free_bytes, buffer)
    if args.json:
        out = est.as_dict()
        out.update(device=state.label, engine=entry.engine, quantization=entry.quantization,
                   on_disk=config.catalog.is_on_disk(entry))
        print(json.dumps(out, indent=1))
        return 0
    print(f"{entry.id} ({entry.display_name}; {entry.quantization}, engine {entry.engine})")
    print(f"device: {state.label}: {fmt_bytes(state.free_bytes)} free of "
          f"{fmt_bytes(state.total_bytes)}, buffer {fmt_bytes(buffer)}")
    print(f"weights        {fmt_bytes(est.weight_bytes):>12}   ({est.source})")
    print(f"KV cache       {fmt_bytes(est.kv_bytes):>12}   ({est.context_tokens} tokens)")
    print(f"overhead       {fmt_bytes(est.overhead_bytes):>12}")
    print(f"total          {fmt_bytes(est.total_bytes):>12}")
    print(f"fits:          {'yes' if est.fits else 'no'}: {est.reason}")
    print(f"max context:   {est.max_context} tokens")
    if est.gpu_memory_utilization is not None:
        print(f"gpu_memory_utilization: {est.gpu_memory_utilization}")
    if entry.engine != "vllm":
        print(f"note: {entry.quantization} weights are loaded by {entry.engine}, not by vLLM")
    return 0
