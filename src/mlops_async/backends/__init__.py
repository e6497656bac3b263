"""Backend registry: a URL scheme names the module that implements it.

Drivers are imported only when their scheme is used, so ``pip install
mlops-async`` works without aiokafka or redis-py. Third-party backends
register with :func:`register_backend` or the ``mlops_async.backends``
entry-point group (``scheme = "package.module:BackendClass"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigurationError, MissingDependency
from .base import Backend, Delivery, GroupInfo, PartitionLag, Record, Subscription, TopicInfo

__all__ = [
    "Backend",
    "Delivery",
    "GroupInfo",
    "PartitionLag",
    "Record",
    "Subscription",
    "TopicInfo",
    "create_backend",
    "register_backend",
]

BackendFactory = Callable[..., Backend]

# scheme -> ("module:Class", extra that provides its driver)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "memory": ("mlops_async.backends.memory:MemoryBackend", None),
    "kafka": ("mlops_async.backends.kafka:KafkaBackend", "kafka"),
    "redis": ("mlops_async.backends.redis:RedisBackend", "redis"),
    "rediss": ("mlops_async.backends.redis:RedisBackend", "redis"),
    # postgresql:// comes from the entry point in pyproject.toml (a plugin).
}
_REGISTERED: dict[str, BackendFactory | str] = {}


def register_backend(scheme: str, factory: BackendFactory | str) -> None:
    """Make ``scheme://`` URLs create backends with ``factory(url, **options)``.

    ``factory`` may be a callable (usually a class with a ``from_url``
    classmethod) or a ``"module:attribute"`` path imported on first use.
    """
    _REGISTERED[scheme.lower()] = factory


def _load(path: str, extra: str | None) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "mlops_async":
            raise
        hint = f"pip install 'mlops-async[{extra}]'" if extra else "install its driver"
        raise MissingDependency(
            f"the backend {path} cannot be imported: {exc.name} is not installed ({hint})"
        ) from exc
    return getattr(module, attr)


def _factory(scheme: str) -> BackendFactory:
    found: BackendFactory | str | None = _REGISTERED.get(scheme)
    extra = None
    if found is None:
        builtin = _BUILTIN.get(scheme)
        if builtin is not None:
            found, extra = builtin
    if found is None:
        for ep in entry_points(group="mlops_async.backends"):
            if ep.name == scheme:
                found = ep.value
                extra = "postgres" if ep.value.startswith("mlops_async.plugins.postgres") else None
                break
    if found is None:
        known = ", ".join(sorted({*_BUILTIN, *_REGISTERED}))
        raise ConfigurationError(f"no backend for scheme {scheme!r}:// (known: {known})")
    obj = _load(found, extra) if isinstance(found, str) else found
    factory: BackendFactory = getattr(obj, "from_url", obj)
    return factory


def create_backend(url: str, **options: Any) -> Backend:
    """Create the backend for ``url``; ``options`` go to its broker client."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(f"not a bus URL: {url!r} (expected e.g. kafka://host:9092)")
    return _factory(scheme.lower())(url, **options)
