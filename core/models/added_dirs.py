"""Model directories the user added (File > Add model directory): a list kept in the data dir.

The list is the user's catalog of local folders: each is offered at every start like the models
found in the Hugging Face cache ("local:NAME" entries). Removing a folder from the list never
touches its files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core import paths

FILE_NAME = "model_dirs.json"


def added_dirs_file() -> Path:
    return paths.data_dir() / FILE_NAME


def load_added_dirs() -> list[Path]:
    """The folders added so far (an unreadable list counts as empty: it only adds offers)."""
    try:
        data = json.loads(added_dirs_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or not isinstance(data.get("model_dirs"), list):
        return []
    return [Path(p) for p in data["model_dirs"] if isinstance(p, str)]


def _save(dirs: list[Path]) -> None:
    target = added_dirs_file()
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model_dirs": [str(d) for d in dirs]}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, target)  # never a half-written list


def add_dir(directory: Path) -> str | None:
    """Check directory and add it to the list. None when added (or already there); otherwise
    why it is not a model vLLM can load here (nothing is added)."""
    from core.models.on_disk import loadable_reason

    directory = directory.expanduser().resolve()
    if not directory.is_dir():
        return f"{directory} is not a directory"
    verdict = loadable_reason(directory)
    if isinstance(verdict, str):
        return f"{directory}: {verdict}"
    dirs = load_added_dirs()
    if directory not in dirs:
        _save([*dirs, directory])
    return None


def remove_dir(directory: Path) -> bool:
    """Drop directory from the list (its files stay). True when it was listed."""
    directory = directory.expanduser().resolve()
    dirs = load_added_dirs()
    if directory not in dirs:
        return False
    _save([d for d in dirs if d != directory])
    return True
