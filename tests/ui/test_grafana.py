"""The Grafana dashboard shipped in the package: a dashboard Grafana can load, whose queries name
only metrics the library exports, and that shows every one of them."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import jsonschema

from mlops_async.grafana import dashboard, dashboard_json
from mlops_async.metrics import Metrics

_DATASOURCE = {
    "type": "object", "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
_GRID = {
    "type": "object", "required": ["h", "w", "x", "y"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in ("h", "w", "x", "y")},
}
_TARGET = {
    "type": "object", "required": ["refId", "expr", "datasource"],
    "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                   "expr": {"type": "string", "minLength": 1},
                   "legendFormat": {"type": "string"}, "datasource": _DATASOURCE,
                   "format": {"enum": ["time_series", "table", "heatmap"]}},
}
#: What Grafana (schemaVersion 36+) needs of an imported dashboard, and what we promise in it:
#: every query panel reads Prometheus through the dashboard's data source variable.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "templating": {
            "type": "object", "required": ["list"],
            "properties": {"list": {"type": "array", "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {"name": {"type": "string"},
                               "type": {"enum": ["datasource", "query", "custom", "interval"]}},
            }}},
        },
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "type", "title", "gridPos"],
            "properties": {"id": {"type": "integer"}, "title": {"type": "string"},
                           "gridPos": _GRID},
            "if": {"properties": {"type": {"const": "row"}}},
            "then": {"properties": {"panels": {"type": "array"}}},
            "else": {
                "required": ["datasource", "targets", "fieldConfig"],
                "properties": {"type": {"enum": ["timeseries", "stat", "heatmap", "gauge",
                                                 "bargauge", "table"]},
                               "datasource": _DATASOURCE,
                               "targets": {"type": "array", "minItems": 1, "items": _TARGET},
                               "fieldConfig": {"type": "object",
                                               "required": ["defaults", "overrides"]}},
            },
        }},
    },
}


def exported_names() -> set[str]:
    """Every sample name the library's metrics produce, as Prometheus scrapes them."""
    m = Metrics("probe")
    m.consumed_ok("q")
    m.consumed_fail("q")
    m.produced_to("q", "r")
    m.timed("cycle", 0.01)
    m.dead_letter("q", "handler_error")
    m.retried("q")
    m.set_lag("q", 3)
    return {s.name for family in m.registry.collect() for s in family.samples}


def exported_families() -> dict[str, set[str]]:
    names = exported_names()
    m = Metrics("probe")
    return {f.name: {n for n in names if n.startswith(f.name) and not n.endswith("_created")}
            for f in m.registry.collect()}


def queries(d: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in d["templating"]["list"] if "definition" in v]
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: every selector here carries label matchers."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr)) | set(
        re.findall(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", expr))


def test_the_dashboard_has_the_shape_grafana_loads() -> None:
    d = dashboard()
    jsonschema.validate(d, SCHEMA)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]  # Grafana's grid is 24 wide
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["app"]["datasource"]["uid"] == "${datasource}"
    for expr in queries(d):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_every_query_names_metrics_the_library_exports() -> None:
    exported = exported_names()
    used: set[str] = set()
    for expr in queries(dashboard()):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} names {names - exported}, not exported"
        used |= names
    for family, samples in exported_families().items():  # and every family is shown
        assert samples & used, f"the dashboard shows nothing of {family}"


def test_python_dash_m_prints_the_dashboard() -> None:
    out = subprocess.run([sys.executable, "-m", "mlops_async.grafana"], check=True,
                         capture_output=True, text=True).stdout
    assert out == dashboard_json()
