"""Model catalog (resources/models.yaml + user overrides) and the VRAM / context estimator."""

from core.models.catalog import Architecture, Catalog, ModelEntry, UnknownModelError, load_catalog
from core.models.estimator import (
    Estimate,
    Estimator,
    EstimatorSettings,
    Footprint,
    estimate,
    fit_context,
    footprint,
    max_context,
)

__all__ = [
    "Architecture",
    "Catalog",
    "Estimate",
    "Estimator",
    "EstimatorSettings",
    "Footprint",
    "ModelEntry",
    "UnknownModelError",
    "estimate",
    "fit_context",
    "footprint",
    "load_catalog",
    "max_context",
]
