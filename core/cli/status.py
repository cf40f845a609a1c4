"""`vrampilot status`: one snapshot of the host and every GPU (or a refreshing view)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from core.telemetry.alerts import AlertEvent
from core.telemetry.config import load_monitoring_config
from core.telemetry.host import HostSampler
from core.telemetry.sampler import Sampler, open_gpu_devices
from core.telemetry.simulated_device import UnknownProfileError
from core.telemetry.snapshot import GpuSnapshot, HostSnapshot, Sample
from core.units import GIB

if TYPE_CHECKING:
    from core.server.control_client import ControlClient

# CPU % is a delta between two reads; the first read of a fresh process needs a short baseline.
_FIRST_READ_GAP_S = 0.25


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "status",
        parents=[common],
        help="show the host and every GPU (VRAM, temperature, power)",
        description="One snapshot of the host and every GPU, in the spirit of nvidia-smi.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one object per refresh)")
    parser.add_argument("--watch", type=_positive_seconds, metavar="SECONDS",
                        help="refresh every SECONDS until Ctrl-C")
    parser.set_defaults(func=run)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0.1:
        raise argparse.ArgumentTypeError("expected at least 0.1 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    from core.server.control_client import find_owner

    owner = find_owner(args)
    if owner is not None:
        with owner:
            return _run_attached(args, owner)
    config = load_monitoring_config(user_path=args.config)
    monitoring = config.hardware_monitoring
    try:
        devices = open_gpu_devices(args.simulate, process_poll_every=1)
    except UnknownProfileError as exc:
        print(f"vrampilot status: {exc}", file=sys.stderr)
        return 2
    sampler = Sampler(devices, HostSampler(), monitoring)
    try:
        time.sleep(_FIRST_READ_GAP_S)
        while True:
            sample = sampler.sample_once()
            alerts = sampler.alerts.active()
            if args.json:
                print(json.dumps(to_json(sample, alerts)), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")
                print(format_table(sample, alerts), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        sampler.close()


def _run_attached(args: argparse.Namespace, owner: ControlClient) -> int:
    """The running owner's snapshot (its devices, its alerts), same output plus who owns."""
    from core.server.control_client import OwnerUnreachable

    try:
        while True:
            answer = owner.get("/status")
            if args.json:
                print(json.dumps(answer["status"] | {"owner": answer["owner"]}), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")
                print(answer["text"] + "\n" + owner_line(answer["owner"]), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except OwnerUnreachable as exc:
        print(f"vrampilot status: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def owner_line(owner: dict[str, Any]) -> str:
    """Which process owns the model, and which model it has loaded."""
    kind = "the app" if owner["kind"] == "app" else f"`vrampilot {owner['kind']}`"
    return (f"Owner   pid {owner['pid']} ({kind}), model {owner['active_model'] or 'none'}"
            + (f", switching to {owner['switching_to']}" if owner["switching_to"] else ""))


def to_json(sample: Sample, alerts: list[AlertEvent]) -> dict[str, Any]:
    """The sample as plain JSON types: host, gpus (None stays null), active alerts."""
    return {
        "host": dataclasses.asdict(sample.host),
        "gpus": [dataclasses.asdict(g) for g in sample.gpus],
        "alerts": [dataclasses.asdict(a) for a in alerts],
    }


def _na(value: object, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _gpu_rows(gpu: GpuSnapshot) -> list[str]:
    if gpu.lost:
        return [f"GPU {gpu.index}  {gpu.name}", f"  LOST: {gpu.error}; no further readings"]
    vram = "n/a"
    if gpu.vram_used_bytes is not None and gpu.vram_total_bytes:
        vram = (f"{gpu.vram_used_bytes / GIB:.1f} / {gpu.vram_total_bytes / GIB:.1f} GiB "
                f"({100 * gpu.vram_used_bytes / gpu.vram_total_bytes:.0f}%)")
    power = f"{_na(gpu.power_w, '{:.0f}')} / {_na(gpu.power_limit_w, '{:.0f}')} W"
    throttle = _na(gpu.throttle_temperature_c, "{:.0f}")
    temp = f"{_na(gpu.temperature_c, '{:.0f}')} C (throttle {throttle})"
    util = f"{_na(gpu.gpu_util_percent, '{:.0f}%')} gpu, {_na(gpu.mem_util_percent, '{:.0f}%')} mem"
    clocks = f"{_na(gpu.sm_clock_mhz)} / {_na(gpu.mem_clock_mhz)} MHz"
    pcie = ("n/a" if gpu.pcie_gen is None else f"Gen{gpu.pcie_gen} x{_na(gpu.pcie_width)}")
    events = "n/a" if gpu.clock_events is None else (", ".join(gpu.clock_events) or "none")
    rows = [
        f"GPU {gpu.index}  {gpu.name}",
        f"  VRAM    {vram}",
        f"  Temp    {temp}    Fan {_na(gpu.fan_percent, '{:.0f}%')}",
        f"  Power   {power}",
        f"  Util    {util}    Clocks SM/Mem {clocks}    PCIe {pcie}",
        f"  Events  {events}",
    ]
    if gpu.processes:
        for p in gpu.processes:
            used = "n/a" if p.used_bytes is None else f"{p.used_bytes / GIB:.2f} GiB"
            rows.append(f"  pid {p.pid:>7}  {used:>10}  {p.name or ''}")
    return rows


def _host_rows(host: HostSnapshot) -> list[str]:
    ram = (f"{host.ram_used_bytes / GIB:.1f} / {host.ram_total_bytes / GIB:.1f} GiB "
           f"({100 * host.ram_used_fraction:.0f}%)")
    swap = f"{host.swap_used_bytes / GIB:.1f} / {host.swap_total_bytes / GIB:.1f} GiB"
    return [
        "Host",
        f"  RAM     {ram}    Swap {swap}",
        f"  CPU     {host.cpu_percent:.0f}%    Temp {_na(host.cpu_temperature_c, '{:.0f} C')}"
        f"    Package {_na(host.package_power_w, '{:.1f} W')}",
    ]


def format_table(sample: Sample, alerts: list[AlertEvent]) -> str:
    """A compact, nvidia-smi-like text view; unsupported metrics read n/a."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sample.host.timestamp))
    lines = [f"vrampilot status  {stamp}", ""]
    if not sample.gpus:
        lines += ["No NVIDIA GPU found (no driver, or no device). "
                  "Try --simulate rtx4090-laptop.", ""]
    for gpu in sample.gpus:
        lines += [*_gpu_rows(gpu), ""]
    lines += _host_rows(sample.host)
    if alerts:
        lines += ["", "Alerts"]
        lines += [f"  {a.level.upper():8} {a.kind} {a.metric} = {a.value:g} "
                  f"(threshold {a.threshold:g})" for a in alerts]
    return "\n".join(lines)
