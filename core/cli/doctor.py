"""`vrampilot doctor`: what the app needs on this machine, what it found, the fix for each gap.

Exit 0 when the app can run (warnings allowed), 1 when it cannot; the first line says which.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "doctor", parents=[common],
        help="check what the app needs here (exit 1 when it cannot run)",
        description="Check Python, the NVIDIA driver, vLLM and torch, Qt's libraries, the display, "
                    "disk, the history database, the remote endpoint and the local API address. "
                    "Each gap comes with its fix. Exit 0 when the app can run, 1 when it cannot.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="skip the slow checks (vLLM import ~8 s, remote endpoint); "
                             "`make run` uses this")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.doctor import DoctorOptions, run_checklist

    report = run_checklist(DoctorOptions(config_file=args.config, quick=args.quick))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.format_table())
    return 0 if report.can_run else 1
