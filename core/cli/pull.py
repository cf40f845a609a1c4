"""`vrampilot pull MODEL [--yes] [--json]`: fetch a catalog entry's repository (or any repo id).

Before any weight is fetched: the file list (sizes) and config.json alone, the estimator's verdict
for this device, and a disk-space check. A model that cannot fit asks first (--yes skips the
question; without a terminal and without --yes the pull is refused). Progress (bytes, rate, ETA)
goes to stderr, or as JSON lines to stdout with --json. Ctrl+C cancels; running the pull again
fetches only what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from core.cli.estimate import load_config_and_state
from core.models.catalog import Catalog, ModelEntry, UnknownModelError
from core.models.estimator import fmt_bytes
from core.models.on_disk import find_repo
from core.models.pull import (
    Progress,
    PullCancelled,
    PullError,
    check_disk,
    download,
    fit_verdict,
    plan_pull,
)
from core.router.selection import HardwareState


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "pull", parents=[common],
        help="download a model's files (weights, config, tokenizer) from the Hugging Face Hub",
        description="Fetch MODEL (a catalog id or a Hugging Face repository id) into the Hugging "
                    "Face cache: only the files vLLM needs. The fit verdict and a disk-space "
                    "check come first; Ctrl+C cancels and a second run fetches only the rest.")
    parser.add_argument("model", metavar="MODEL", help="catalog id or ORG/NAME repository id")
    parser.add_argument("--yes", action="store_true",
                        help="download even when the model does not fit this device")
    parser.add_argument("--json", action="store_true",
                        help="JSON lines on stdout (plan, progress, done or error)")
    parser.set_defaults(func=run)


def resolve(catalog: Catalog, model: str) -> tuple[str, ModelEntry | None]:
    """The repository to fetch and the catalog entry it belongs to (None for a bare repo id)."""
    if model in catalog:
        entry = catalog.get(model)
        if not entry.hf_repo:
            raise PullError(f"{model} has no Hugging Face repository (hf_repo) in the catalog: "
                            "it is built locally or served remotely", 2)
        if entry.is_gguf:
            raise PullError(f"{model} is a GGUF model for llama.cpp; vrampilot pull fetches "
                            "models vLLM loads", 2)
        return entry.hf_repo, entry
    for entry in catalog:
        if entry.hf_repo == model:
            return model, entry
    if model.count("/") == 1 and all(model.split("/")):
        return model, None
    raise PullError(str(UnknownModelError(model, catalog.ids)) + ", or give ORG/NAME", 2)


class _Reporter:
    """Progress lines on stderr (one rewritten line on a terminal) or JSON lines on stdout."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stderr.isatty()

    def event(self, kind: str, **fields: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": kind, **fields}), flush=True)

    def say(self, text: str) -> None:
        if not self.as_json:
            print(text, file=sys.stderr, flush=True)

    def progress(self, p: Progress) -> None:
        if self.as_json:
            print(json.dumps(p.as_dict()), flush=True)
            return
        pct = 100.0 * p.done_bytes / p.total_bytes if p.total_bytes else 100.0
        eta = "?" if p.eta_s is None else _duration(p.eta_s)
        line = (f"{fmt_bytes(p.done_bytes)} of {fmt_bytes(p.total_bytes)} ({pct:.0f}%)  "
                f"{fmt_bytes(p.rate_bytes_per_s)}/s  ETA {eta}  [{p.files_done}/{p.files_total}] "
                f"{p.file}")
        print(("\r" + line + "\x1b[K") if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def end_progress(self) -> None:
        if self.tty and not self.as_json:
            print(file=sys.stderr)


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def run(args: argparse.Namespace) -> int:
    loaded = load_config_and_state(args, "pull")
    if isinstance(loaded, int):
        return loaded
    config, state = loaded
    out = _Reporter(args.json)
    try:
        return _pull(args, config.catalog, state, config.buffer_bytes,
                     out)
    except PullError as exc:
        out.end_progress()
        out.event("error", message=str(exc), exit_code=exc.exit_code)
        if not args.json:
            print(f"vrampilot pull: {exc}", file=sys.stderr)
        return exc.exit_code


def _pull(args: argparse.Namespace, catalog: Catalog, state: HardwareState, buffer: int,
          out: _Reporter) -> int:
    repo_id, entry = resolve(catalog, args.model)
    from core import paths

    present = find_repo(repo_id, paths.models_dir())
    if present is not None:
        out.say(f"{repo_id} is already on disk: {present}")
        out.event("done", repo=repo_id, path=str(present), downloaded_bytes=0)
        return 0
    plan = plan_pull(repo_id)
    est = fit_verdict(plan, entry, catalog, state, buffer)
    out.say(f"{repo_id} @ {plan.commit[:12]}: {len(plan.files)} files, "
            f"{fmt_bytes(plan.total_bytes)} ({fmt_bytes(plan.missing_bytes)} to fetch)")
    out.say(f"fit on {state.label}: {'yes' if est.fits else 'NO'}: {est.reason}")
    out.event("plan", repo=repo_id, commit=plan.commit, files=len(plan.files),
              total_bytes=plan.total_bytes, missing_bytes=plan.missing_bytes,
              fits=est.fits, reason=est.reason, device=state.label)
    check_disk(plan)
    if not est.fits and not args.yes:
        if not sys.stdin.isatty():
            raise PullError(f"{repo_id} does not fit {state.label}; pass --yes to download it "
                            "anyway", 2)
        if not _confirm("It will not fit this device. Download anyway? [y/N] "):
            raise PullError("not downloaded", 1)
    cancel = threading.Event()
    result: dict[str, Path | BaseException] = {}

    def work() -> None:
        try:
            result["path"] = download(plan, out.progress, cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result["error"] = exc

    worker = threading.Thread(target=work, name="vrampilot-pull", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        worker.join()
    out.end_progress()
    error = result.get("error")
    if isinstance(error, PullCancelled) or (cancel.is_set() and "path" not in result):
        raise PullCancelled(f"cancelled; files already complete are kept: run `vrampilot pull "
                            f"{args.model}` again to fetch the rest")
    if isinstance(error, BaseException):
        raise error
    path = result["path"]
    out.say(f"{repo_id} is on disk: {path}")
    if entry is None:
        out.say(f"load it with: vrampilot --model {path}")
    out.event("done", repo=repo_id, path=str(path), downloaded_bytes=plan.missing_bytes)
    return 0
