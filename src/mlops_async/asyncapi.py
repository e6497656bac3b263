"""An AsyncAPI 3.0 document of an :class:`App` or a :class:`Pipeline`.

What the document holds, all read from the app's declarations (nothing is
opened or probed):

- ``servers``: one per bus URL the queues live on (the app's URL, a
  queue's own ``url``/``type``, environment overrides), without credentials.
- ``channels``: one per queue, addressed by its real topic, carrying the
  message of the queue's schema; dead-letter channels carry ``DeadLetter``
  with the ``x-error*`` headers the engine writes.
- ``operations``: for every handler, ``receive`` on its input (with its
  consumer group), ``send`` on each output and ``send`` on its dead-letter channel.
- ``components``: the messages, and their JSON Schemas generated from the
  msgspec schemas (``msgspec.json.schema_components``).

``mlops-async docs module:app --out asyncapi.yaml`` writes it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._version import __version__
from .deadletter import DeadLetter
from .endpoint import ENV_VAR, split_url
from .errors import ConfigurationError
from .queues import Queue, schema_of, url_of

if TYPE_CHECKING:
    from .app import App
    from .pipeline import Pipeline

__all__ = ["asyncapi_document", "render"]

ASYNCAPI_VERSION = "3.0.0"
_SCHEMAS = "#/components/schemas/{name}"
_ID = re.compile(r"[^\w.\-]")  # AsyncAPI map keys: letters, digits, '.', '-', '_'

# The headers the engine puts on a dead letter (see mlops_async.deadletter).
_DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        name: {"type": "string", "description": text}
        for name, text in (
            ("x-error-type", "class name of the error"),
            ("x-error", "the error message (first 500 bytes)"),
            ("x-source-topic", "topic the message was read from"),
            ("x-source-position", "partition/offset or stream id it was read at"),
            ("x-attempts", "how many times the handler was tried"),
            ("x-handler", "name of the handler that gave up"),
            ("x-failed-at", "Unix time of the failure"),
        )
    },
}


@dataclass
class _Handler:
    """What the document needs from a handler: the app's Route, reduced."""

    name: str
    input: str
    outputs: tuple[str, ...]
    dead_letter: str
    retries: int
    group: str


def _key(text: str) -> str:
    return _ID.sub("_", text)


def _from_app(app: App) -> tuple[dict[str, Queue], list[_Handler]]:
    handlers = [
        _Handler(r.name, r.input, r.outputs, r.dead_letter, r.retries, app.group)
        for r in app.routes
    ]
    return dict(app.queues), handlers


def _from_pipeline(pipeline: Pipeline) -> tuple[dict[str, Queue], list[_Handler]]:
    from .app import App

    queues: dict[str, Queue] = dict(pipeline.queues)
    handlers: list[_Handler] = []
    for stage in pipeline.stages.values():
        # The stage as the App it runs as (declaration only: no params, nothing opened),
        # so queue defaults and dead-letter names are the engine's own.
        app = App(f"{pipeline.name}.{stage.name}", url=pipeline.url,
                  queues=pipeline.queues.values())
        if stage.input is None:  # a source: it only sends
            app.source(outputs=stage.outputs, name=stage.name)(stage.fn)
        else:
            app.handler(input=stage.input, outputs=stage.outputs, name=stage.name,
                        **stage.handler_options)(stage.fn)
        stage_queues, stage_handlers = _from_app(app)
        for name, q in stage_queues.items():
            queues.setdefault(name, q)
        handlers += stage_handlers
    return queues, handlers


def _server(url: str) -> dict[str, Any]:
    base, _creds, _params = split_url(url)  # no user, password or query in the document
    scheme, _, rest = base.partition("://")
    host, slash, path = rest.partition("/")
    server: dict[str, Any] = {"host": host or scheme, "protocol": scheme}
    if path:
        server["pathname"] = slash + path
    if scheme == "memory":
        server["description"] = "the in-process bus (one Python process)"
    elif "," in host:
        server["description"] = "bootstrap servers: " + host
    return server


def _schema_hook(tp: Any) -> dict[str, Any]:
    from .arrays import schema_hook

    try:
        return schema_hook(tp)
    except NotImplementedError:
        name = getattr(tp, "__qualname__", repr(tp))
        return {"description": f"{name}: a type the document cannot describe"}


def _draft7(node: Any) -> Any:
    """msgspec writes tuples as ``prefixItems`` (2020-12); AsyncAPI schemas are draft-07."""
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft7(v) for k, v in node.items()}
    if "prefixItems" in out:
        out["items"] = out.pop("prefixItems")
        out.setdefault("additionalItems", False)
    return out


def _schemas(types: Iterable[type[Any]]) -> tuple[dict[type[Any], str], dict[str, Any]]:
    """Component name of each type, and the JSON Schemas of every type they use."""
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(
        unique, schema_hook=_schema_hook, ref_template=_SCHEMAS
    )
    names = {tp: ref["$ref"].rsplit("/", 1)[1] for tp, ref in zip(unique, refs, strict=True)}
    return names, _draft7(components)


def asyncapi_document(
    target: App | Pipeline, *, url: str | None = None, version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``target`` as a dict (JSON-ready).

    ``url`` replaces the target's default bus URL, as ``mlops-async run --url``
    does; with neither, ``MLOPS_BUS_URL`` is used, else the document has no
    servers (the bus is chosen at run time). Raises :class:`ConfigurationError`
    if ``target`` is neither an App nor a Pipeline, or a queue's schema cannot
    be imported.
    """
    from .app import App
    from .pipeline import Pipeline

    if isinstance(target, Pipeline):
        queues, handlers = _from_pipeline(target)
        kind = "pipeline"
    elif isinstance(target, App):
        queues, handlers = _from_app(target)
        kind = "app"
    else:
        raise ConfigurationError(f"{target!r} is neither an App nor a Pipeline")
    default = url or target.url or os.environ.get(ENV_VAR) or None

    dead_letters = {h.dead_letter for h in handlers}
    schema_by_queue: dict[str, type[Any]] = {}
    for name, q in queues.items():
        schema_by_queue[name] = DeadLetter if name in dead_letters else schema_of(q)
    names, components = _schemas(schema_by_queue.values())

    servers: dict[str, Any] = {}
    server_of: dict[str, str] = {}  # queue -> server id
    by_url: dict[str, str] = {}
    for name, q in queues.items():
        where = url_of(q, default)
        if where is None:
            continue
        if where not in by_url:
            server = _server(where)
            sid = _key(server["protocol"])
            n = 2
            while sid in servers:
                sid, n = f"{_key(server['protocol'])}-{n}", n + 1
            servers[sid] = server
            by_url[where] = sid
        server_of[name] = by_url[where]

    messages: dict[str, Any] = {}
    for tp, cname in names.items():
        dlq = tp is DeadLetter
        messages[cname] = {
            "name": cname,
            "title": cname,
            "contentType": "application/msgpack",
            **({"description": "a message that could not be handled: its original bytes "
                               "and the reason"} if dlq else {}),
            "payload": {"$ref": _SCHEMAS.format(name=cname)},
            **({"headers": _DEAD_LETTER_HEADERS} if dlq else {}),
        }

    channels: dict[str, Any] = {}
    channel_of: dict[str, str] = {}
    for name, q in queues.items():
        cid = _key(name)
        channel_of[name] = cid
        cname = names[schema_by_queue[name]]
        channel: dict[str, Any] = {
            "address": q.topic,
            "title": name,
            "description": (f"dead letters (queue {name!r})" if name in dead_letters
                            else f"queue {name!r}"),
            "messages": {cname: {"$ref": f"#/components/messages/{cname}"}},
        }
        if len(servers) > 1 and name in server_of:
            channel["servers"] = [{"$ref": f"#/servers/{server_of[name]}"}]
        channels[cid] = channel

    operations: dict[str, Any] = {}

    def operation(oid: str, action: Literal["send", "receive"], queue: str,
                  text: str, **extra: Any) -> None:
        cid = channel_of[queue]
        cname = names[schema_by_queue[queue]]
        operations[_key(oid)] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "title": oid,
            "description": text,
            "messages": [{"$ref": f"#/channels/{cid}/messages/{cname}"}],
            **extra,
        }

    for h in handlers:
        bindings: dict[str, Any] = {}
        if servers.get(server_of.get(h.input, ""), {}).get("protocol") == "kafka":
            bindings = {"bindings": {"kafka": {
                "groupId": {"type": "string", "enum": [h.group]}, "bindingVersion": "0.5.0"}}}
        operation(h.name, "receive", h.input,
                  f"handler {h.name!r} reads {h.input!r} in consumer group {h.group!r}; "
                  f"acknowledged after its outputs are confirmed; {h.retries} retries, "
                  f"then dead-lettered", **bindings)
        for out in h.outputs:
            operation(f"{h.name}.send.{out}", "send", out,
                      f"handler {h.name!r} publishes to {out!r}")
        operation(f"{h.name}.dead_letter", "send", h.dead_letter,
                  f"inputs handler {h.name!r} could not handle, with the reason")

    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": target.name,
            "version": version,
            "description": (
                f"The queues of the mlops_async {kind} {target.name!r}, generated by "
                f"mlops-async {__version__}. On the wire a payload is one marker byte "
                f"then the message: 0x01 msgpack (the default), 0x02 JSON; readers "
                f"accept both. The schemas show the JSON form: under msgpack, bytes "
                f"are binary and numpy arrays are extension type 1."
            ),
        },
        "defaultContentType": "application/msgpack",
    }
    if servers:
        doc["servers"] = servers
    doc["channels"] = channels
    doc["operations"] = operations
    doc["components"] = {"messages": messages, "schemas": components}
    return doc


def render(doc: dict[str, Any], fmt: str = "yaml") -> str:
    """``doc`` as ``"yaml"`` or ``"json"`` text.

    Raises :class:`ConfigurationError` for another format, or if YAML is
    asked for and PyYAML (the ``config`` extra) is not installed.
    """
    if fmt == "json":
        return msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"
    if fmt != "yaml":
        raise ConfigurationError(f"unknown document format {fmt!r}: use 'yaml' or 'json'")
    try:
        return msgspec.yaml.encode(doc).decode()
    except ImportError as exc:
        raise ConfigurationError(
            f"YAML output needs PyYAML: pip install 'mlops-async[config]', or write JSON "
            f"({exc})"
        ) from exc
