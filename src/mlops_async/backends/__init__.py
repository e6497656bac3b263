"""Backend registry: a URL scheme names the module that implements it.

Drivers are imported only when their scheme is used, so ``pip install
mlops-async`` works without aiokafka or redis-py. Third-party backends
register with :func:`register_backend` or the ``mlops_async.backends``
entry-point group (``scheme = "package.module:BackendClass"``).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..endpoint import redact
from ..errors import ConfigurationError, MissingDependency
from .base import Backend, Delivery, GroupInfo, PartitionLag, Record, Subscription, TopicInfo

__all__ = [
    "KAFKA_CLIENT_OPTIONS",
    "Backend",
    "Delivery",
    "GroupInfo",
    "PartitionLag",
    "Record",
    "Subscription",
    "TopicInfo",
    "check_options",
    "create_backend",
    "register_backend",
]

BackendFactory = Callable[..., Backend]

# scheme -> ("module:Class", extra that provides its driver)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "memory": ("mlops_async.backends.memory:MemoryBackend", None),
    "kafka": ("mlops_async.backends.kafka.aio:KafkaBackend", "kafka"),
    "kafka+confluent": ("mlops_async.backends.kafka.confluent:ConfluentBackend", "confluent"),
    "redis": ("mlops_async.backends.redis:RedisBackend", "redis"),
    "rediss": ("mlops_async.backends.redis:RedisBackend", "redis"),
    # postgresql:// comes from the entry point in pyproject.toml (a plugin).
}
_REGISTERED: dict[str, BackendFactory | str] = {}

log = logging.getLogger("mlops_async")
_warned: set[str] = set()

#: Client options of the Kafka clients the seed code was written for: harmless on
#: the in-memory bus (ignored there with a warning), so such code runs unchanged.
KAFKA_CLIENT_OPTIONS = frozenset({
    "acks", "api_version", "auto_commit_interval_ms", "auto_offset_reset", "batch_size",
    "bootstrap_servers", "buffer_memory", "client_id", "compression_type",
    "connections_max_idle_ms", "enable_auto_commit", "enable_idempotence", "fetch_max_bytes",
    "fetch_max_wait_ms", "fetch_min_bytes", "group_id", "heartbeat_interval_ms",
    "key_deserializer", "key_serializer", "linger_ms", "max_batch_size", "max_block_ms",
    "max_in_flight_requests_per_connection", "max_partition_fetch_bytes",
    "max_poll_interval_ms", "max_poll_records", "max_request_size", "metadata_max_age_ms",
    "partitioner", "receive_buffer_bytes", "reconnect_backoff_ms", "request_timeout_ms",
    "retries", "retry_backoff_ms", "security_protocol", "send_buffer_bytes",
    "session_timeout_ms", "value_deserializer", "value_serializer",
})


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
    except MissingDependency:  # the module said which extra it needs
        raise
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "mlops_async":
            raise
        hint = f"pip install 'mlops-async[{extra}]'" if extra else "install its driver"
        raise MissingDependency(
            f"the backend {path} cannot be imported: {exc.name} is not installed ({hint})"
        ) from exc
    return getattr(module, attr)


def _backend(scheme: str) -> Any:
    """The backend class (or factory) registered for ``scheme``, imported on first use."""
    found: BackendFactory | str | None = _REGISTERED.get(scheme)
    extra = None
    if found is None:
        builtin = _BUILTIN.get(scheme)
        if builtin is not None:
            found, extra = builtin
    if found is None:
        # Only now: scanning installed packages' entry points costs about 2 ms, which
        # every Producer and Consumer of a built-in scheme would pay when it opens.
        plugins = {ep.name: ep.value for ep in entry_points(group="mlops_async.backends")}
        if scheme not in plugins:
            known = ", ".join(sorted({*_BUILTIN, *_REGISTERED, *plugins}))
            raise ConfigurationError(f"no backend for scheme {scheme!r}:// (known: {known})")
        found = plugins[scheme]
    return _load(found, extra) if isinstance(found, str) else found


def check_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Reject options the backend for ``url`` does not take; returns the options to use.

    Raises :class:`ConfigurationError` naming each unknown option and the
    closest known ones. Kafka client options given to the in-memory bus (code
    written for Kafka that fell back to it) are dropped with one warning.
    A backend that declares no options (``option_names()`` is None) takes anything.
    """
    scheme = _scheme(url)
    names = getattr(_backend(scheme), "option_names", lambda: None)()
    if names is None:
        return options
    unknown = [k for k in options if k not in names]
    if not unknown:
        return options
    if scheme == "memory":
        foreign = [k for k in unknown if k in KAFKA_CLIENT_OPTIONS]
        if foreign:
            new = sorted(set(foreign) - _warned)
            if new:
                _warned.update(new)
                log.warning("memory:// ignores these Kafka client options: %s", ", ".join(new))
            options = {k: v for k, v in options.items() if k not in foreign}
            unknown = [k for k in unknown if k not in foreign]
    if unknown:
        hints = []
        for k in unknown:
            if k == "partitioner":
                # Kafka shares a group's work by partition; these brokers share it record
                # by record already, so the option would do nothing: say so, not "typo?".
                hints.append(f"{k} (a Kafka option: {scheme}:// hands a group's records to "
                             "its members one by one without it; drop it)")
                continue
            close = difflib.get_close_matches(k, sorted(names), n=3, cutoff=0.5)
            hints.append(f"{k} (did you mean {' or '.join(close)}?)" if close else k)
        raise ConfigurationError(f"unknown option(s) for {scheme}://: {', '.join(hints)}")
    return options


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"not a bus URL: {redact(url)!r} (expected e.g. kafka://host:9092)")
    return scheme.lower()


def create_backend(url: str, **options: Any) -> Backend:
    """Create the backend for ``url``; ``options`` go to its broker client.

    Raises :class:`ConfigurationError` for an unknown scheme or option, and
    :class:`MissingDependency` when the scheme's extra is not installed.
    """
    options = check_options(url, options)
    obj = _backend(_scheme(url))
    factory: BackendFactory = getattr(obj, "from_url", obj)
    return factory(url, **options)
