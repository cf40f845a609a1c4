"""The `vrampilot` command: the desktop app, or a headless command when one is named.

Kept free of Qt imports so headless commands start fast and work without a display.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def build_gui_parser() -> argparse.ArgumentParser:
    from core.cli import command_names, common_options

    parser = argparse.ArgumentParser(
        prog="vrampilot",
        parents=[common_options()],
        description=(
            "Watch a laptop GPU (VRAM, temperature, power) and run one local LLM at a time on it. "
            "Without a command, opens the desktop app."
        ),
        epilog="headless commands: " + ", ".join(command_names())
        + " (run `vrampilot COMMAND --help`)",
    )
    parser.add_argument("--model", metavar="PATH",
                        help="model directory to load at start (default: the built-in demo model)")
    parser.add_argument("--no-autoload", action="store_true",
                        help="open the window without loading a model")
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="install the icon and .desktop file for the current user, then exit")
    parser.add_argument("--version", action="version", version="vrampilot 0.1.0")
    return parser


def has_display() -> bool:
    """Qt needs a display server unless a platform such as offscreen is chosen."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    from core.cli import command_names

    if args_list and args_list[0] in command_names():
        from core.cli import main as cli_main

        return cli_main(args_list)

    args = build_gui_parser().parse_args(args_list)
    # Bad input is reported before Qt starts: a bad --config / --simulate, or (from the runtime)
    # a history database that is not one. One line, exit 2, no traceback.
    from core.cli import bad_input_message, check_common_options

    try:
        check_common_options(args.config, args.simulate)
    except ValueError as exc:
        message = bad_input_message(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    if args.install_desktop_entry:
        from gui.desktop_entry import install_desktop_entry

        for path in install_desktop_entry():
            print(f"installed {path}")
        return 0

    if args.model:
        from core.engine.base import ModelDirectoryError
        from core.engine.demo_model import check_model_dir

        try:
            check_model_dir(Path(args.model))
        except ModelDirectoryError as exc:
            print(f"vrampilot: {exc}", file=sys.stderr)
            return 2

    if not has_display():
        print(
            "vrampilot: no display found. Start a display server (or run under xvfb-run), "
            "or set QT_QPA_PLATFORM=offscreen to run without one.",
            file=sys.stderr,
        )
        return 2

    from gui.app import run_app

    try:
        return run_app(args)
    except ValueError as exc:
        message = bad_input_message(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
