"""Task router: complexity analysis, hardware-aware selection and the explanation of a decision.

    router = Router(load_router_config(catalog=catalog), catalog)
    decision = router.route(text, "salary_analysis", HardwareState(free, total, 62.0))
    print(decision.explain())
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.config_loading import ConfigError, read_yaml
from core.models.catalog import Catalog, default_models_file
from core.router.complexity import Complexity, ComplexityAnalyzer, Factor
from core.router.config import RouterConfig, SwitchingShared, build_router_config
from core.router.selection import (
    LOADABLE_ENGINES,
    HardwareState,
    Rejection,
    Router,
    RoutingDecision,
)

__all__ = [
    "LOADABLE_ENGINES",
    "Complexity",
    "ComplexityAnalyzer",
    "Factor",
    "HardwareState",
    "Rejection",
    "Router",
    "RouterConfig",
    "RoutingDecision",
    "load_router_config",
    "route",
]


def load_router_config(catalog: Catalog, user_router: Mapping[str, Any] | None = None,
                       user_path: Path | str | None = None, *,
                       defaults_path: Path | str | None = None,
                       switching: SwitchingShared | None = None) -> RouterConfig:
    """The `router:` section of resources/models.yaml with the user's section merged over it.

    switching: the model_switching settings the router shares (buffer, cascade); None: the
    shipped ones (resources/monitoring.yaml).
    """
    dpath = Path(defaults_path) if defaults_path is not None else default_models_file()
    section = read_yaml(dpath).get("router")
    if not isinstance(section, Mapping):
        raise ConfigError(dpath, "router", "expected a mapping")
    if switching is None:
        from core.telemetry.config import load_monitoring_config

        switching = load_monitoring_config().model_switching
    return build_router_config(section, catalog, defaults_path=dpath, switching=switching,
                               user_router=user_router, user_path=user_path)


def route(text: str, task_type: str, hardware: HardwareState, catalog: Catalog,
          private: bool = False, *, config: RouterConfig | None = None) -> RoutingDecision:
    """One decision with a fresh Router (config: the default `router:` section when None).

    For many decisions build a `Router` once: it precomputes what this function redoes.
    """
    cfg = config if config is not None else load_router_config(catalog)
    return Router(cfg, catalog).route(text, task_type, hardware, private)
