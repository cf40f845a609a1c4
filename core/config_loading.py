"""Read YAML into typed pydantic settings; errors name the file, the key and what was expected."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
# libyaml's parser when PyYAML was built with it (its wheels are): the catalog takes ~25 ms to
# parse in pure Python and is read at every start and by every test that builds a manager.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(ValueError):
    """A configuration file could not be used. The message names the file and the key."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Parse a YAML mapping, or raise ConfigError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read file ({exc.strerror or exc})") from exc
    try:
        data = yaml.load(text, Loader=_LOADER)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        raise ConfigError(p, "", f"not valid YAML: {_yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(p, "", f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: what is wrong and where (PyYAML's own text spans several
    lines, quoting the source)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Override's keys win; nested mappings merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def validate(model: type[M], data: Mapping[str, Any], path: Path | str) -> M:
    """Validate data into model; the first error becomes a ConfigError naming file and key.

    Models should set ``extra="forbid"`` so unknown keys are reported, not ignored.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        raise ConfigError(path, key, describe_error(err)) from None


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as the "problem" part of a ConfigError: what was expected."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":  # our own validators: the message says what was expected
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{err['msg']} (got {err.get('input')!r})"
