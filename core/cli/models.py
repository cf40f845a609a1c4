"""`vrampilot models [--json]`: the catalog, with size, fit, largest context and on-disk state."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core import paths
from core.cli.estimate import load_config_and_state, settings_for
from core.models.catalog import Catalog
from core.models.estimator import Estimator, EstimatorSettings, fmt_bytes
from core.models.on_disk import as_entry, scan_other_models
from core.router.selection import HardwareState


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "models", parents=[common],
        help="list the model catalog: engine, size, fit on this device, max context, on disk",
        description="The catalog with each model's estimated size, whether it fits the device's "
                    "free memory (with the safety buffer), the largest context that fits and "
                    "whether its files are on disk.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.server.control_client import ask_owner

    report = ask_owner(args, lambda owner: owner.get("/models"))
    if report is None:
        loaded = load_config_and_state(args, "models")
        if isinstance(loaded, int):
            return loaded
        config, state = loaded
        report = models_report(config.catalog, Estimator(config.catalog, settings_for(state)),
                               state, config.buffer_bytes)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_models(report))
    return 0


def models_report(catalog: Catalog, estimator: Estimator, state: HardwareState,
                  buffer: int) -> dict[str, Any]:
    """The catalog against a device state, as JSON: what `vrampilot models --json` prints."""
    rows: list[dict[str, Any]] = []
    for entry in catalog:
        row: dict[str, Any] = {
            "id": entry.id, "name": entry.display_name, "engine": entry.engine,
            "quantization": entry.quantization, "mode": entry.mode, "priority": entry.priority,
            "enabled": entry.enabled, "trust_remote_code": entry.trust_remote_code,
            "expected_tokens_per_s": entry.expected_tokens_per_s,
        }
        if entry.is_remote:
            row.update(size_bytes=None, fits=None, max_context=None, on_disk=None,
                       base_url=entry.base_url, note="remote endpoint" + (
                           "" if entry.base_url else " (not configured)"))
        else:
            est = estimator.fit_context(entry, state.total_bytes, state.free_bytes, buffer)
            row.update(size_bytes=est.weight_bytes, fits=est.fits,
                       max_context=est.max_context, on_disk=catalog.is_on_disk(entry),
                       path=str(catalog.local_path(entry)),
                       context=est.context_tokens if est.fits else None,
                       gpu_memory_utilization=est.gpu_memory_utilization,
                       note=None if entry.engine == "vllm" else f"needs {entry.engine}")
        rows.append(row)
    others, skipped = other_model_rows(catalog, state, estimator.settings, buffer)
    return {"device": {"label": state.label, "free_bytes": state.free_bytes,
                       "total_bytes": state.total_bytes, "buffer_bytes": buffer},
            "models": rows, "other_models": others, "skipped": skipped}


def format_models(report: dict[str, Any]) -> str:
    """The text table of a models report."""
    device = report["device"]
    lines = [f"device: {device['label']}: {fmt_bytes(device['free_bytes'])} free of "
             f"{fmt_bytes(device['total_bytes'])}, buffer {fmt_bytes(device['buffer_bytes'])}",
             f"{'model':30} {'engine':9} {'quant':7} {'weights':>10} {'fits':5} {'max ctx':>8} "
             f"{'on disk':7}"]
    for row in report["models"]:
        if row["size_bytes"] is None:
            lines.append(f"{row['id']:30} {row['engine']:9} {'-':7} {'-':>10} {'-':5} {'-':>8} "
                         f"{'-':7} {row['note']}")
            continue
        lines.append(f"{row['id']:30} {row['engine']:9} {row['quantization']:7} "
                     f"{fmt_bytes(row['size_bytes']):>10} {'yes' if row['fits'] else 'no':5} "
                     f"{row['max_context']:>8} {'yes' if row['on_disk'] else 'no':7}"
                     + (f" {row['note']}" if row["note"] else ""))
    if report.get("other_models"):
        lines.append("\nOther models on this machine (load with --model PATH or from the Models "
                     "tab):")
        for row in report["other_models"]:
            lines.append(f"{row['id']:30} {'vllm':9} {row['quantization']:7} "
                         f"{fmt_bytes(row['size_bytes']):>10} {'yes' if row['fits'] else 'no':5} "
                         f"{row['max_context']:>8} {row['path']}")
    return "\n".join(lines)


def other_model_rows(catalog: Catalog, state: HardwareState, settings: EstimatorSettings,
                     buffer: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The models on this machine no catalog entry names, each with the estimator's verdict."""
    found, skipped = scan_other_models(catalog, paths.models_dir())
    template = next(e for e in catalog if not e.is_remote)
    rows: list[dict[str, Any]] = []
    for model in found:
        entry = as_entry(model, template)
        extended = catalog.with_entry(entry)
        est = Estimator(extended, settings).fit_context(entry, state.total_bytes,
                                                        state.free_bytes, buffer)
        rows.append({"id": entry.id, "name": model.name, "path": str(model.path),
                     "origin": model.origin, "architecture": model.architecture,
                     "quantization": model.quantization, "size_bytes": model.size_bytes,
                     "weight_bytes": est.weight_bytes, "fits": est.fits,
                     "max_context": est.max_context, "reason": est.reason})
    return rows, skipped
