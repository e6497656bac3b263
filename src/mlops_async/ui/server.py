"""A small HTTP server on asyncio streams: the page, its assets, server-sent events, and the
dead-letter calls.

Hand-written rather than starlette/aiohttp: the page needs five routes, one of
them a stream of JSON lines (SSE), so a web framework would be a dependency for
less than it costs to read; this keeps ``mlops-async ui`` working with the
core install, on the event loop the pipeline already runs.

Routes: ``GET /`` (the page), ``GET /static/<file>``, ``GET /events`` (one
snapshot a second as SSE), ``GET /api/snapshot``, ``GET /api/dlq?topic=``
(newest dead letters) and ``POST /api/replay`` (``{"topic", "limit"}``). A
POST must carry ``X-Requested-With: mlops-async``: a browser sends that header
from another site's page only after a CORS preflight this server never grants,
so no other web page can make it replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from ..errors import BusError
from .snapshot import Watch

__all__ = ["UIServer", "serve_ui"]

log = logging.getLogger("mlops_async.ui")

_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
#: Open connections (each page holds one for its events): a bound, like every buffer here.
MAX_CLIENTS = 64
_MAX_HEAD = 16 * 1024
_MAX_BODY = 16 * 1024
_STATUS = {200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           502: "Bad Gateway", 503: "Service Unavailable"}


class _Bad(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class UIServer:
    """Serves the page for one :class:`Watch`; ``close()`` ends every stream (safe twice)."""

    def __init__(self, watch: Watch, host: str = "127.0.0.1", port: int = 8080,
                 keepalive: float = 15.0) -> None:
        self.watch = watch
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._assets = {name: (resources.files(__package__) / "static" / name).read_bytes()
                        for name in _STATIC}

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        await self.watch.close()

    async def __aenter__(self) -> UIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > MAX_CLIENTS:
                await _send(writer, 503, "text/plain", b"too many open pages")
                return
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the page went away mid-request
        except asyncio.CancelledError:
            # close() ends open streams so: finish quietly (asyncio logs a handler task
            # that ends cancelled as an error).
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, query, headers, body = await _read_request(reader)
        except _Bad as bad:
            await _send(writer, bad.status, "text/plain", str(bad).encode())
            return
        try:
            if path == "/events" and method == "GET":
                await self._events(writer)
                return
            status, ctype, data = await self._route(method, path, query, headers, body)
        except _Bad as bad:
            status, ctype, data = bad.status, "application/json", _json({"error": str(bad)})
        await _send(writer, status, ctype, data)

    async def _route(self, method: str, path: str, query: dict[str, list[str]],
                     headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        if method == "GET":
            name = "index.html" if path == "/" else path.removeprefix("/static/")
            if (path == "/" or path.startswith("/static/")) and name in _STATIC:
                return 200, _STATIC[name], self._assets[name]
            if path == "/favicon.ico":
                return 200, _STATIC["favicon.svg"], self._assets["favicon.svg"]
            if path == "/api/snapshot":
                return 200, "application/json", await self.watch.current()
            if path == "/api/dlq":
                topic = _one_param(query, "topic")
                limit = int(_one_param(query, "limit", "20"))
                try:
                    waiting: int | None = await self.watch.waiting(topic)
                except BusError:  # an Admin that cannot tell: the letters still show
                    waiting = None
                return 200, "application/json", _json(
                    {"topic": topic, "waiting": waiting,
                     "letters": self.watch.letters(topic, limit)})
            raise _Bad(404, f"no page at {path}")
        if method == "POST" and path == "/api/replay":
            if headers.get("x-requested-with") != "mlops-async":
                raise _Bad(403, "replay needs the header X-Requested-With: mlops-async")
            try:
                req = json.loads(body or b"{}")
                topic, limit = str(req["topic"]), req.get("limit")
                if limit is not None and (not isinstance(limit, int) or limit < 1):
                    raise ValueError("limit must be a positive integer or null")
            except (ValueError, KeyError, TypeError) as exc:
                raise _Bad(400, f"expected {{'topic': str, 'limit': int | null}}: {exc}") from None
            if not topic.endswith(".dlq") and topic not in _dead_letter_topics(self.watch):
                raise _Bad(400, f"{topic!r} is not a dead-letter topic of this pipeline")
            try:
                n = await self.watch.replay(topic, limit)
            except BusError as exc:
                raise _Bad(502, f"replay failed: {exc}") from exc
            return 200, "application/json", _json({"topic": topic, "replayed": n})
        raise _Bad(405, f"{method} {path} is not served")

    async def _events(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n"
                     b"retry: 2000\n\n")
        await writer.drain()
        q = self.watch.listen()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(q.get(), self.keepalive)
                except TimeoutError:
                    writer.write(b": keepalive\n\n")  # proxies close silent streams
                else:
                    writer.write(b"data: " + data + b"\n\n")
                await writer.drain()
        finally:
            await self.watch.leave(q)


def _dead_letter_topics(watch: Watch) -> set[str]:
    from .graph import graph_of

    return {d for s in graph_of(watch.targets).stages.values() for d in s.dead_letters}


def _one_param(query: dict[str, list[str]], name: str, default: str | None = None) -> str:
    values = query.get(name)
    if values:
        return values[0]
    if default is None:
        raise _Bad(400, f"missing query parameter {name!r}")
    return default


def _json(obj: Any) -> bytes:
    # No NaN in JSON: a float the page cannot parse becomes null.
    return msgspec.json.encode(obj, enc_hook=str)


async def _read_request(reader: asyncio.StreamReader) -> tuple[
        str, str, dict[str, list[str]], dict[str, str], bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _Bad(413, "request head too large") from None
    if len(head) > _MAX_HEAD:
        raise _Bad(413, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise _Bad(400, "bad request line") from None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > _MAX_BODY:
        raise _Bad(413, "request body too large")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return method.upper(), url.path, parse_qs(url.query), headers, body


async def _send(writer: asyncio.StreamWriter, status: int, ctype: str, data: bytes) -> None:
    writer.write(
        f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
        f"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n".encode() + data)
    await writer.drain()


async def serve_ui(url: str, targets: Any = (), *, host: str = "127.0.0.1", port: int = 8080,
                   client_options: dict[str, Any] | None = None, interval: float = 1.0,
                   silent_after: float = 3.0) -> UIServer:
    """Start serving the live page for the bus at ``url`` and return the server.

    ``targets`` are the Pipelines and Apps whose declarations draw the graph
    (none: the graph is drawn from the replicas' heartbeats). ``port=0`` picks a
    free port (``server.port``). Call ``await server.close()`` when done.
    Raises ``OSError`` if the port cannot be bound.
    """
    from ..app import App
    from ..pipeline import Pipeline

    if isinstance(targets, App | Pipeline):
        targets = [targets]
    server = UIServer(Watch(url, list(targets), client_options=client_options,
                            interval=interval, silent_after=silent_after), host, port)
    await server.start()
    return server
