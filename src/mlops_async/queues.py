"""Queue declarations: in code, or in a YAML/TOML file decoded into typed config.

A queue has a ``name`` (what code uses), a ``value`` (the real topic or
stream; the name by default), where it lives (``url``, or ``type`` naming a
scheme: memory, kafka, redis, or a plugin's dotted path), a ``schema``
(a dotted path to a msgspec Struct; MLOpsMessage by default) and
``options`` for the consumer that reads it (e.g. ``auto_offset_reset``,
``prefetch``, or broker-client settings such as ``max_poll_interval_ms``).
One app may read from Kafka and write to Redis.

Environment overrides, most specific first: ``MLOPS_QUEUE_<NAME>_URL``, then
``MLOPS_<TYPE>_URL`` (e.g. ``MLOPS_KAFKA_URL``), then the file's own ``url``
or the app's URL.

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
import os
import re
from pathlib import Path
from typing import Any

import msgspec

from .backends import register_backend
from .errors import ConfigurationError
from .message import MLOpsMessage

__all__ = ["AppConfig", "Queue", "import_object", "load_config"]


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


def schema_of(queue: Queue) -> type[Any]:
    if queue.schema is None:
        return MLOpsMessage
    obj = import_object(queue.schema)
    if not (isinstance(obj, type) and issubclass(obj, msgspec.Struct)):
        raise ConfigurationError(
            f"queue {queue.name!r}: schema {queue.schema!r} is not a msgspec.Struct type"
        )
    return obj


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


def url_of(queue: Queue, default: str | None) -> str | None:
    """Where ``queue`` lives, after environment overrides (see the module docstring)."""
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
    if kind:
        by_type = os.environ.get(f"MLOPS_{_env_name(kind)}_URL")
        if by_type:
            return by_type
    if queue.url:
        return queue.url
    if kind == "memory":
        return "memory://default"
    return default


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
