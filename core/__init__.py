"""vrampilot core: Qt-free telemetry, model catalog, engines, manager and router."""

__version__ = "0.1.0"
