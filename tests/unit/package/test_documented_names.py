"""What the documentation names can be imported from ``mlops_async`` itself."""

from __future__ import annotations

import mlops_async


def test_documented_names_are_exported() -> None:
    for name in ("reports_status", "Webhook", "TaskStatus", "task_status", "Metrics",
                 "serve_metrics", "WrongEventLoop"):
        assert name in mlops_async.__all__, name
        assert getattr(mlops_async, name) is not None
