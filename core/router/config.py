"""Router settings (the `router:` section of models.yaml, overridable by the user's file).

Every weight, band and model list of the routing policy lives here, not in code. Every model
name a list can hold must be in the catalog: `load_router_config` checks it and names file and key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.config_loading import ConfigError, describe_error
from core.models.catalog import Catalog, key_origin, merge_sections
from core.units import GIB

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class SwitchingShared(Protocol):
    """What the router shares with model_switching (core.telemetry.config.ModelSwitching)."""

    @property
    def vram_buffer_gb(self) -> float: ...
    @property
    def fallback_cascade(self) -> Sequence[str]: ...


class LengthBand(BaseModel):
    """Content strictly longer than over_chars adds `add` (only the highest band passed counts)."""

    model_config = _FROZEN
    over_chars: int = Field(ge=0)
    add: float


class Signal(BaseModel):
    """A case-insensitive content signal. Exactly one of any / all / count is set."""

    model_config = _FROZEN
    name: str
    add: float
    any: tuple[str, ...] | None = None  # one of these terms occurs
    all: tuple[str, ...] | None = None  # every one of these terms occurs
    count: str | None = None  # this term occurs more than `more_than` times
    more_than: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Signal:
        kinds = [k for k in ("any", "all", "count") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a signal needs exactly one of `any`, `all` or `count`")
        return self

    def describe(self) -> str:
        if self.any:
            return " or ".join(f'"{t}"' for t in self.any)
        if self.all:
            return " and ".join(f'"{t}"' for t in self.all)
        return f'more than {self.more_than} x "{self.count}"'


class ComplexityConfig(BaseModel):
    model_config = _FROZEN
    length_bands: tuple[LengthBand, ...]
    task_types: dict[str, float]
    unknown_task_type: float
    signals: tuple[Signal, ...] = ()
    cap: float = 1.0


class SelectionRule(BaseModel):
    """One row of the router table: it applies when every condition it sets holds.

    The comparisons are strict (the policy's table uses `>` and `<`): below_complexity is
    score < x, above_complexity is score > x, above_free_gib is free memory > x GiB. A rule that
    sets no condition always applies: the last rule of a band, and only that one.
    """

    model_config = _FROZEN
    below_complexity: float | None = None
    above_complexity: float | None = None
    above_free_gib: float | None = Field(default=None, ge=0)
    prefer: tuple[str, ...] = Field(min_length=1)

    @property
    def conditions(self) -> tuple[str, ...]:
        """The conditions this rule sets, as text ("complexity > 0.9", "free > 14 GiB")."""
        out = []
        if self.below_complexity is not None:
            out.append(f"complexity < {self.below_complexity:g}")
        if self.above_complexity is not None:
            out.append(f"complexity > {self.above_complexity:g}")
        if self.above_free_gib is not None:
            out.append(f"free > {self.above_free_gib:g} GiB")
        return tuple(out)

    def applies(self, score: float, free_bytes: int) -> bool:
        if self.below_complexity is not None and not score < self.below_complexity:
            return False
        if self.above_complexity is not None and not score > self.above_complexity:
            return False
        return self.above_free_gib is None or free_bytes > self.above_free_gib * GIB


def _check_rules(rules: tuple[SelectionRule, ...]) -> None:
    if rules[-1].conditions:
        raise ValueError("the last rule must set no condition (it takes every case left)")
    if any(not r.conditions for r in rules[:-1]):
        raise ValueError("only the last rule may set no condition (the rules after it could "
                         "never apply)")


class HotBand(BaseModel):
    """Above above_temperature_c (strictly) these rules decide, whatever the free memory."""

    model_config = _FROZEN
    above_temperature_c: float = 80.0
    rules: tuple[SelectionRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _last_rule_catches_all(self) -> HotBand:
        _check_rules(self.rules)
        return self


class VramBand(BaseModel):
    """Applies when free memory is below below_gib GiB (None: no bound; the last band)."""

    model_config = _FROZEN
    below_gib: float | None = None
    rules: tuple[SelectionRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _last_rule_catches_all(self) -> VramBand:
        _check_rules(self.rules)
        return self


# Filled from model_switching (one setting each for the router and the manager), never read from
# the `router:` section: `build_router_config` refuses them there.
FROM_MODEL_SWITCHING = {"buffer_gib": "vram_buffer_gb", "cascade": "fallback_cascade"}


class SelectionConfig(BaseModel):
    model_config = _FROZEN
    buffer_gib: float = Field(default=1.0, ge=0)  # model_switching.vram_buffer_gb
    min_context_tokens: int = Field(default=1024, ge=1)
    hot: HotBand
    vram_bands: tuple[VramBand, ...] = Field(min_length=1)
    cascade: tuple[str, ...] = ()  # model_switching.fallback_cascade without the remote endpoint
    local_tier: tuple[str, ...] = ()
    use_remote: bool = True

    @model_validator(mode="after")
    def _bands_ordered(self) -> SelectionConfig:
        if self.vram_bands[-1].below_gib is not None:
            raise ValueError("the last vram band must have no below_gib")
        bounds = [b.below_gib for b in self.vram_bands[:-1] if b.below_gib is not None]
        if len(bounds) != len(self.vram_bands) - 1:
            raise ValueError("only the last vram band may leave out below_gib")
        if bounds != sorted(bounds):
            raise ValueError("vram bands must be in increasing below_gib")
        return self


class RouterConfig(BaseModel):
    """The `router:` section."""

    model_config = _FROZEN
    complexity: ComplexityConfig
    selection: SelectionConfig

    def named_models(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Every model name in the config with its key path (relative to `router:`)."""
        sel = self.selection
        for r, rule in enumerate(sel.hot.rules):
            for i, name in enumerate(rule.prefer):
                yield ("selection", "hot", "rules", r, "prefer", i), name
        for b, band in enumerate(sel.vram_bands):
            for r, rule in enumerate(band.rules):
                for i, name in enumerate(rule.prefer):
                    yield ("selection", "vram_bands", b, "rules", r, "prefer", i), name
        for i, name in enumerate(sel.local_tier):
            yield ("selection", "local_tier", i), name


def build_router_config(defaults: Mapping[str, Any], catalog: Catalog, *,
                        defaults_path: Path | str, switching: SwitchingShared,
                        user_router: Mapping[str, Any] | None = None,
                        user_path: Path | str | None = None) -> RouterConfig:
    """Merge the user's `router:` over the defaults, validate, and check every model name.

    The buffer and the cascade come from `switching` (model_switching); the remote endpoint is
    left out of the cascade (the router adds it by selection.use_remote).
    """
    if user_router is not None and not isinstance(user_router, Mapping):
        raise ConfigError(user_path or "<user config>", "router", "expected a mapping")
    for source, path in ((defaults, defaults_path), (user_router, user_path)):
        selection = source.get("selection") if isinstance(source, Mapping) else None
        for key, ours in FROM_MODEL_SWITCHING.items():
            if isinstance(selection, Mapping) and key in selection:
                raise ConfigError(path or "<user config>", f"router.selection.{key}",
                                  f"moved to model_switching.{ours} (one setting for the "
                                  "router and the manager)")
    merged = merge_sections(defaults, user_router)
    if isinstance(merged.get("selection"), Mapping):
        merged["selection"] = {
            **merged["selection"], "buffer_gib": switching.vram_buffer_gb,
            "cascade": tuple(m for m in switching.fallback_cascade
                             if m not in catalog or not catalog.get(m).is_remote)}
    try:
        config = RouterConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        path = key_origin(loc, user_router, defaults_path, user_path)
        key = ".".join(["router", *(str(p) for p in loc)])
        raise ConfigError(path, key, describe_error(err)) from None
    for loc, name in config.named_models():
        if name not in catalog:
            path = key_origin(loc, user_router, defaults_path, user_path)
            raise ConfigError(path, ".".join(["router", *(str(p) for p in loc)]),
                              f"model {name!r} is not in the catalog "
                              f"(known: {', '.join(catalog.ids)})")
        if catalog.get(name).is_remote:
            path = key_origin(loc, user_router, defaults_path, user_path)
            raise ConfigError(path, ".".join(["router", *(str(p) for p in loc)]),
                              f"{name!r} is the remote endpoint; the router adds it itself "
                              "(selection.use_remote)")
    return config
