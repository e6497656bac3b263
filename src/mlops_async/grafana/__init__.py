"""A Grafana dashboard for the engine's Prometheus metrics (see :mod:`mlops_async.metrics`).

``python -m mlops_async.grafana > mlops-async.json`` writes it; import it in Grafana
(Dashboards > New > Import) and pick the Prometheus data source that scrapes the apps.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["dashboard", "dashboard_json"]


def dashboard_json() -> str:
    """The dashboard as shipped in the package (JSON text)."""
    return (resources.files(__package__) / "mlops-async.json").read_text(encoding="utf-8")


def dashboard() -> dict[str, Any]:
    """The dashboard as a dict, e.g. to change its title or uid before provisioning it."""
    out: dict[str, Any] = json.loads(dashboard_json())
    return out
