"""Headless commands: `vrampilot status|models|estimate|route|generate|history|build-demo|doctor`,
`vrampilot pull` and `vrampilot soak`.

Each command lives in its own module exposing ``register(subparsers, common)``; the module
sets ``func`` on its parser to a callable taking the parsed args and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("status", "models", "estimate", "route", "generate", "history", "build_demo",
            "doctor", "pull", "soak")


def common_options() -> argparse.ArgumentParser:
    """Options every command (and the GUI) accepts."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="user YAML overriding resources/monitoring.yaml and models.yaml")
    common.add_argument("--simulate", metavar="PROFILE",
                        help="decide against a simulated GPU (e.g. rtx4090-laptop, or a "
                             "profile file such as my-laptop.yaml)")
    return common


def check_common_options(config: str | None, simulate: str | None) -> None:
    """Validate --config and --simulate up front, for every command and the app alike, so a bad
    file or profile is reported before anything starts (a command that does not otherwise need
    the config still refuses a bad one). Raises ConfigError or UnknownProfileError."""
    if config is not None:
        from core.config import load_app_config

        load_app_config(config, log_warnings=False)  # the command's own load warns once
    if simulate:
        from core.telemetry.simulated_device import load_profile

        load_profile(simulate)


def bad_input_message(exc: Exception) -> str | None:
    """The one-line message for bad input (a config, a profile, the history database, the data
    directory), else None."""
    from core.config_loading import ConfigError
    from core.history_store import HistoryStoreError
    from core.paths import DataDirError
    from core.telemetry.simulated_device import UnknownProfileError

    if isinstance(exc, ConfigError):
        return f"vrampilot: configuration error: {exc}"
    if isinstance(exc, UnknownProfileError | HistoryStoreError | DataDirError):
        return f"vrampilot: {exc}"
    return None


def command_names() -> list[str]:
    return [name.replace("_", "-") for name in COMMANDS]


def build_parser(prog: str = "vrampilot") -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog=prog, description="vrampilot headless commands")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"core.cli.{name}")
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one headless command; returns its exit code. Bad input exits 2 without a traceback."""
    from core.server.errors import ControlError, OwnerUnreachable

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # The doctor reports a bad config (and an unusable data folder) as failed checks in its
        # table, exit 1: diagnosing them is its job. Every other command refuses them up front.
        check_common_options(None if args.command == "doctor" else args.config, args.simulate)
        code: int = args.func(args)
    except ValueError as exc:  # ConfigError, UnknownProfileError, HistoryStoreError, DataDirError
        message = bad_input_message(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    except (ControlError, OwnerUnreachable) as exc:  # the running owner refused or went away
        print(f"vrampilot {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
