from __future__ import annotations

import mlops_async
from mlops_async import errors


def test_all_is_exact_and_importable() -> None:
    for name in mlops_async.__all__:
        assert hasattr(mlops_async, name), name
    public = {n for n in dir(mlops_async) if not n.startswith("_")}
    modules = {
        "admin",
        "backends",
        "codec",
        "consumer",
        "deadletter",
        "endpoint",
        "errors",
        "message",
        "producer",
        "demo",
        "cli",
        "app",
        "metrics",
        "queues",
        "signals",
        "pipeline",
        "status",
        "plugins",
        "top",
        "spool",
    }
    assert public - modules - {"annotations"} == set(mlops_async.__all__) - {"__version__"}


def test_every_error_is_a_bus_error_with_a_docstring() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.BusError)
        assert cls.__doc__
    assert errors.BusUnavailable.retriable and not errors.DecodeError.retriable
