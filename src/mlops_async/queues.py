"""Queue declarations: in code, or in a YAML/TOML file decoded into typed config.

A queue has a ``name`` (what code uses), a ``value`` (the real topic or
stream; the name by default), where it lives (``url``, or ``type`` naming a
scheme: memory, kafka, redis, or a plugin's dotted path), a ``schema``
(a dotted path to a msgspec Struct; MLOpsMessage by default) and
``options`` for the consumer that reads it (e.g. ``auto_offset_reset``,
``prefetch``, or broker-client settings such as ``max_poll_interval_ms``).
Two options are not the reader's: ``partitioner`` goes to the producer that
writes the queue (Kafka: ``round_robin`` spreads keyless records over the
partitions), and ``partitions`` declares how many partitions the topic has
(nothing creates or changes topics from it; ``deploy k8s`` and ``Pipeline``
warn when a stage runs more replicas than that).
One app may read from Kafka and write to Redis.

Where a queue lives, most specific first: ``MLOPS_QUEUE_<NAME>_URL``, then
``MLOPS_<TYPE>_URL`` (e.g. ``MLOPS_KAFKA_URL``), then the queue's own ``url``.
A queue with a ``type`` and none of these takes the app's URL only if it is of
that type; otherwise it is a :class:`ConfigurationError` naming the queue (a
``type: kafka`` queue never silently reads the in-memory bus). An unknown
``type`` is an error too. A queue with neither takes the app's URL.

``schema: dict`` makes a schema-less queue: plain JSON/msgpack objects pass
through as dicts (volley's ComponentMessage). A queue that declares no schema
takes the annotation of its handler's parameter (see :func:`handler_schema`),
else :class:`MLOpsMessage`.

```yaml
url: kafka://localhost:9092          # default for queues that name none
queues:
  - name: raw_events
    value: events.raw.v1
    schema: myapp.models:RawEvent
  - name: alerts
    type: redis
    url: redis://localhost:6379/0
```
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .backends import check_options, register_backend
from .errors import ConfigurationError, MissingDependency
from .message import MLOpsMessage

__all__ = [
    "AppConfig",
    "Queue",
    "consumer_options",
    "declared_partitions",
    "handler_schema",
    "import_object",
    "load_config",
    "producer_options",
]

#: ``type:`` names volley's users write for the schemes we have.
_TYPE_ALIASES = {"rsmq": "redis"}


class Queue(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One queue an app reads or writes."""

    name: str
    value: str | None = None
    url: str | None = None
    type: str | None = None
    schema: str | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def topic(self) -> str:
        return self.value or self.name


#: Queue options for the producer that writes the queue, not the consumer that reads it.
PRODUCER_OPTIONS = frozenset({"partitioner"})
#: Queue options that describe the topic itself: no client takes them.
TOPIC_OPTIONS = frozenset({"partitions"})


def consumer_options(queue: Queue) -> dict[str, Any]:
    """``queue.options`` for the consumer that reads it."""
    return {k: v for k, v in queue.options.items()
            if k not in PRODUCER_OPTIONS and k not in TOPIC_OPTIONS}


def producer_options(queue: Queue) -> dict[str, Any]:
    """``queue.options`` for the producer that writes it (``partitioner``)."""
    return {k: v for k, v in queue.options.items() if k in PRODUCER_OPTIONS}


def declared_partitions(queue: Queue) -> int | None:
    """The partition count ``queue.options`` declares (``partitions: 4``), or None.

    Raises :class:`ConfigurationError` naming the queue when it is not a positive integer.
    """
    value = queue.options.get("partitions")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"queue {queue.name!r}: partitions must be a positive integer, not {value!r}")
    return value


class AppConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The contents of a queues file."""

    url: str | None = None
    queues: list[Queue] = msgspec.field(default_factory=list)


def import_object(path: str) -> Any:
    """``"package.module:Name"`` (or ``"package.module.Name"``) -> the object."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"not an import path: {path!r} (expected 'package.module:Name')")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {path!r}: {exc}") from exc
    return obj


def schema_of(queue: Queue, hinted: type[Any] | None = None) -> type[Any]:
    """The schema ``queue`` carries: its declared ``schema``, else ``hinted`` (the
    annotation of the handler that reads it), else :class:`MLOpsMessage`.

    ``schema: dict`` gives ``dict`` (schema-less: plain objects pass through).
    Raises :class:`ConfigurationError` if the path cannot be imported or is
    neither a ``msgspec.Struct`` type nor ``dict``.
    """
    if queue.schema is None:
        return hinted if hinted is not None else MLOpsMessage
    obj = dict if queue.schema == "dict" else import_object(queue.schema)
    if obj is not dict and not (isinstance(obj, type) and issubclass(obj, msgspec.Struct)):
        raise ConfigurationError(
            f"queue {queue.name!r}: schema {queue.schema!r} is not a msgspec.Struct type "
            f"(or 'dict' for plain objects)"
        )
    return typing.cast(type[Any], obj)


def handler_schema(fn: Callable[..., Any], *, batch: bool = False) -> type[Any] | None:
    """The input schema a handler's first parameter is annotated with, or None.

    A ``msgspec.Struct`` type, or ``dict`` (also ``dict[str, Any]``) for plain
    objects; for a batch handler (``batch=True``) the element type of
    ``list[X]``. No annotation, any other one, or one that cannot be resolved
    (a class local to a function, under postponed annotations) gives None.
    """
    fn = inspect.unwrap(fn)  # a functools.wraps wrapper: its annotations live on the original
    try:
        first = next(iter(inspect.signature(fn).parameters.values()), None)
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return None
    if first is None:
        return None
    annotation = first.annotation
    if isinstance(annotation, str):  # ``from __future__ import annotations``
        try:
            annotation = typing.get_type_hints(fn).get(first.name)
        except Exception:  # NameError and friends: an annotation we cannot see through
            return None
    if batch:
        if typing.get_origin(annotation) not in (list, Sequence):
            return None
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    if annotation is dict or typing.get_origin(annotation) is dict:
        return dict
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    return None


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


def _family(scheme: str) -> str:
    """``kafka+confluent`` and ``kafka`` are one family, as are ``rediss`` and ``redis``."""
    base = scheme.lower().split("+", 1)[0]
    return "redis" if base == "rediss" else "postgresql" if base == "postgres" else base


def _scheme_of(url: str | None) -> str | None:
    return url.split("://", 1)[0].lower() if url and "://" in url else None


def _check_type(queue: Queue, scheme: str) -> None:
    """Raise :class:`ConfigurationError` naming ``queue`` if no backend serves its type."""
    try:
        check_options(f"{scheme}://", {})
    except MissingDependency:
        return  # a known type whose driver is not installed: opening the queue says so
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"queue {queue.name!r}: unknown type {queue.type!r} ({exc})") from None


def url_of(queue: Queue, default: str | None) -> str | None:
    """Where ``queue`` lives (see the module docstring); ``default`` is the app's URL.

    Raises :class:`ConfigurationError` naming the queue for an unknown ``type``,
    a ``url`` of another type, or a ``type`` with no URL to go with it.
    """
    specific = os.environ.get(f"MLOPS_QUEUE_{_env_name(queue.name)}_URL")
    if specific:
        return specific
    kind = queue.type
    if kind and ("." in kind or ":" in kind):
        # A plugin backend named by path: register it under its URL's scheme.
        if not queue.url or "://" not in queue.url:
            raise ConfigurationError(
                f"queue {queue.name!r}: a plugin type needs a url with its scheme"
            )
        register_backend(queue.url.split("://", 1)[0], kind)
        return queue.url
    if not kind:
        return queue.url or default
    scheme = _TYPE_ALIASES.get(kind.lower(), kind.lower())
    _check_type(queue, scheme)
    env = f"MLOPS_{_env_name(kind)}_URL"
    by_type = os.environ.get(env)
    if by_type:
        return by_type
    if queue.url:
        given = _scheme_of(queue.url)
        if given is not None and _family(given) != _family(scheme):
            raise ConfigurationError(
                f"queue {queue.name!r}: type {kind!r} but url {given}://...; drop one of them"
            )
        return queue.url
    if scheme == "memory":
        return "memory://default"
    app_scheme = _scheme_of(default)
    if app_scheme is not None and _family(app_scheme) == _family(scheme):
        return default  # the app's own URL is of this type: the user's evident intent
    raise ConfigurationError(
        f"queue {queue.name!r} has type {kind!r} but no url: give it a url, or set {env}"
    )


def load_config(path: str | Path) -> AppConfig:
    """Read a ``.yaml``/``.yml`` or ``.toml`` queues file into :class:`AppConfig`.

    Errors name the file and the bad key (``$.queues[1].schema``).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read queues file {p}: {exc}") from exc
    try:
        if p.suffix in (".yaml", ".yml"):
            return msgspec.yaml.decode(data, type=AppConfig)
        if p.suffix == ".toml":
            return msgspec.toml.decode(data, type=AppConfig)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"{p}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"{p}: not valid {p.suffix[1:].upper()}: {exc}") from None
    except ImportError as exc:  # msgspec.yaml needs PyYAML
        raise ConfigurationError(
            f"reading {p} needs PyYAML: pip install 'mlops-async[config]' ({exc})"
        ) from exc
    raise ConfigurationError(f"{p}: queues files are .yaml, .yml or .toml")
