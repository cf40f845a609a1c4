"""The `vrampilot` command: the desktop app, or a headless command when one is named.

Kept free of Qt imports so headless commands start fast and work without a display.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from core.server.control_client import ControlClient


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
    parser.add_argument("--serve", metavar="[HOST:]PORT", type=_serve_address,
                        help="serve the local OpenAI-compatible API (default host 127.0.0.1; "
                             "another host needs an API key, see the server: config section)")
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="install the icon and .desktop file for the current user, then exit")
    parser.add_argument("--version", action="version", version="vrampilot 0.1.0")
    return parser


def _serve_address(value: str) -> tuple[str | None, int]:
    from core.server.settings import parse_serve

    try:
        return parse_serve(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def has_display() -> bool:
    """Qt needs a display server unless a platform such as offscreen is chosen."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def qt_platform_failure(env: Mapping[str, str] = os.environ) -> str | None:
    """Why Qt could not open a window here (its platform plugin lacks system libraries), or None.

    Qt aborts with a core dump when the xcb plugin cannot load its libraries, so the doctor's
    check runs first (ldd, ~50 ms); offscreen and other display-less platforms are not checked.
    """
    from core.doctor.qt_checks import NO_DISPLAY_PLATFORMS, check_qt, qt_platforms
    from core.doctor.report import Status

    if sys.platform != "linux" or qt_platforms(env)[0] in NO_DISPLAY_PLATFORMS:
        return None
    check = check_qt(env)
    if check.status is not Status.FAIL:
        return None  # WARN (no ldd to ask): let Qt try
    return f"Qt cannot open a window: {check.found}. Install: {check.fix}"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `vrampilot` entry point: run, then end the process at once (core.process_exit says
    why). An exception escaping run() takes the normal way out, with its traceback."""
    from core.process_exit import exit_now

    exit_now(run(argv))


def bad_input(exc: ValueError) -> int:
    """Report bad input (a config, profile, history or data-dir error) in one line: exit 2.
    Any other ValueError is a bug and keeps its traceback."""
    from core.cli import bad_input_message

    message = bad_input_message(exc)
    if message is None:
        raise exc
    print(message, file=sys.stderr)
    return 2


def run(argv: Sequence[str] | None = None) -> int:
    """The desktop app or a headless command; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    from core.cli import command_names

    if args_list and args_list[0] in command_names():
        from core.cli import main as cli_main

        return cli_main(args_list)

    args = build_gui_parser().parse_args(args_list)
    # Bad input is reported before Qt starts: a bad --config / --simulate, or (from the runtime)
    # a history database that is not one. One line, exit 2, no traceback.
    from core.cli import check_common_options

    try:
        check_common_options(args.config, args.simulate)
    except ValueError as exc:
        return bad_input(exc)
    if args.install_desktop_entry:
        from gui.desktop_entry import install_desktop_entry

        for path in install_desktop_entry():
            print(f"installed {path}")
        return 0

    if args.model:
        from core.facade import ModelDirectoryError, check_model_dir

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
    failure = qt_platform_failure()
    if failure is not None:
        print(f"vrampilot: {failure}", file=sys.stderr)
        return 2

    from core.server.instance_lock import InstanceLock

    # One owner of the model per user: a second launch raises the first window and leaves.
    try:
        lock = InstanceLock()  # in the data dir's run/ unless a runtime dir is set
    except ValueError as exc:  # a data directory that cannot be used
        return bad_input(exc)
    if not lock.try_acquire("app"):
        from core.server.control_client import OwnerUnreachable, attach_or_own

        try:
            owner = attach_or_own(lock, "app")
        except OwnerUnreachable as exc:
            print(f"vrampilot: {exc}", file=sys.stderr)
            return 1
        if owner is not None:
            with owner:
                return bring_owner_to_front(owner, args)

    # core before Qt: once PySide6 is imported it hooks every later import (its __feature__
    # handling), and core's (numpy, pydantic, yaml) are most of the launch's.
    import core.facade  # noqa: F401
    from gui.app import run_app

    try:
        code = run_app(args, lock)
    except ValueError as exc:
        return bad_input(exc)
    finally:
        lock.release()
    if getattr(args, "relaunch_simulated", False):  # the no-GPU offer, taken: start again
        from gui.first_run import relaunch, relaunch_command

        relaunch(relaunch_command(str(Path(args.config).resolve()) if args.config else None))
    return code


def bring_owner_to_front(owner: ControlClient, args: argparse.Namespace) -> int:
    """Ask the running app to raise its window (no Qt here: nothing is created or loaded)."""
    from core.server.control_client import ControlError, OwnerUnreachable

    try:
        owner.post("/raise")
    except (ControlError, OwnerUnreachable) as exc:
        print(f"vrampilot: {exc}", file=sys.stderr)
        return 1
    print(f"vrampilot already runs (pid {owner.pid}): its window was brought to the front")
    if args.model or args.simulate or args.config or args.no_autoload:
        print("vrampilot: the options of this launch are ignored; the running app keeps its own",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    main()
