"""Prometheus metrics for stream-engine workers (the ``metrics`` extra).

Every series carries the app name; never message content or ids. As
Prometheus scrapes them (counters get ``_total``, histograms ``_bucket``,
``_sum`` and ``_count``):

- ``messages_consumed_count_total{app,queue,status="success"|"fail"}``
- ``messages_produced_count_total{app,source,destination}``
- ``process_time_seconds_bucket|_sum|_count{app,process_name="component"|"cycle"}``
- ``dead_letters_total{app,queue,reason}``
- ``retries_total{app,queue}``
- ``consumer_lag{app,queue}`` (a gauge) where the backend can tell

:func:`serve_metrics` serves them next to the application's own metrics (the
default ``prometheus_client`` registry, or the registries it is given), and
answers ``/healthz`` and ``/readyz`` for Kubernetes probes.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import MissingDependency

__all__ = ["Check", "Metrics", "MetricsServer", "redis_round_trips", "serve_metrics"]

log = logging.getLogger("mlops_async.metrics")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependency(
            "metrics need the 'metrics' extra: pip install 'mlops-async[metrics]'"
        ) from exc
    return prometheus_client


@functools.cache
def redis_round_trips() -> Any:
    """The Redis connector's ``redis_process_time_seconds{operation}`` summary, or None.

    It lives in prometheus_client's default registry, which ``--metrics-port`` serves
    next to the app's; None when the metrics extra is not installed.
    """
    try:
        import prometheus_client
    except ImportError:
        return None
    try:
        return prometheus_client.Summary(
            "redis_process_time_seconds", "Seconds per Redis round trip of the connector",
            ["operation"])
    except ValueError:  # registered by an earlier import of this module (a reload)
        return prometheus_client.REGISTRY._names_to_collectors.get("redis_process_time_seconds")


class Metrics:
    """The engine's metrics in one registry (a private one unless given)."""

    def __init__(self, app: str, *, registry: Any = None, prefix: str = "") -> None:
        prom = _prometheus()
        self.app = app
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        p = prefix
        r = self.registry
        self.consumed = prom.Counter(f"{p}messages_consumed_count", "Input messages handled",
                                     ["app", "queue", "status"], registry=r)
        self.produced = prom.Counter(f"{p}messages_produced_count", "Output messages published",
                                     ["app", "source", "destination"], registry=r)
        self.process_time = prom.Histogram(
            f"{p}process_time_seconds", "Time in the handler (component) and per message (cycle)",
            ["app", "process_name"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                     10, 30),
        )
        self.dead_letters = prom.Counter(f"{p}dead_letters_total", "Messages dead-lettered",
                                         ["app", "queue", "reason"], registry=r)
        self.retries = prom.Counter(f"{p}retries_total", "Handler retries", ["app", "queue"],
                                    registry=r)
        self.lag = prom.Gauge(f"{p}consumer_lag", "Messages not yet consumed by the app's group",
                              ["app", "queue"], registry=r)

    def consumed_ok(self, queue: str, n: int = 1) -> None:
        self.consumed.labels(self.app, queue, "success").inc(n)

    def consumed_fail(self, queue: str) -> None:
        self.consumed.labels(self.app, queue, "fail").inc()

    def produced_to(self, source: str, destination: str, n: int = 1) -> None:
        self.produced.labels(self.app, source, destination).inc(n)

    def timed(self, process: str, seconds: float) -> None:
        self.process_time.labels(self.app, process).observe(seconds)

    def dead_letter(self, queue: str, reason: str) -> None:
        self.dead_letters.labels(self.app, queue, reason).inc()

    def retried(self, queue: str) -> None:
        self.retries.labels(self.app, queue).inc()

    def set_lag(self, queue: str, lag: int) -> None:
        self.lag.labels(self.app, queue).set(lag)


#: A probe: returns ``(ok, detail)``; ``detail`` goes out as JSON. Called on the
#: server's thread, so it must only read state (as ``App.health`` does).
Check = Callable[[], tuple[bool, dict[str, Any]]]


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` served over HTTP from a daemon thread.

    ``health`` and ``ready`` are the checks behind ``/healthz`` and ``/readyz``;
    they may be set (or replaced) while the server runs. With none set, a probe
    answers 200.
    """

    def __init__(self, server: Any, health: Check | None = None,
                 ready: Check | None = None) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self.health = health
        self.ready = ready

    def probe(self, path: str) -> tuple[bool, dict[str, Any]]:
        """The answer for ``/healthz`` or ``/readyz``: never raises (a failing check is 503)."""
        check = self.health if path == "/healthz" else self.ready
        try:
            return check() if check is not None else (True, {})
        except Exception as exc:  # a probe must answer, not hang or crash the server
            return False, {"error": repr(exc)}

    def close(self) -> None:
        """Stop serving and release the socket; safe to call twice.

        Waits for the serving thread (up to its 0.5 s poll): from async code use
        :meth:`aclose`.
        """
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)


class _Together:
    """Several registries collected as one (a family in two of them is served once).

    What ``prometheus_client.make_wsgi_app`` needs of a registry: ``collect()``,
    and ``restricted_registry(names)`` for scrapes that ask for ``name[]=...``.
    """

    def __init__(self, registries: list[Any], names: frozenset[str] | None = None,
                 warned: set[str] | None = None) -> None:
        self._registries = registries
        self._names = names
        self._warned = warned if warned is not None else set()

    def restricted_registry(self, names: Iterable[str]) -> _Together:
        return _Together(self._registries, frozenset(names), self._warned)

    def collect(self) -> Iterator[Any]:
        seen: set[str] = set()
        for registry in self._registries:
            for family in registry.collect():
                if family.name in seen:
                    if family.name not in self._warned:  # two families of one name: invalid
                        self._warned.add(family.name)
                        log.warning("metric %s is defined twice; serving the first",
                                    family.name)
                    continue
                seen.add(family.name)
                if self._names is not None:
                    samples = [x for x in family.samples if x.name in self._names]
                    if not samples:
                        continue
                    family = copy.copy(family)
                    family.samples = samples
                yield family


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        return None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_metrics(metrics: Metrics, port: int, addr: str = "127.0.0.1", *,
                  health: Check | None = None, ready: Check | None = None,
                  registries: Iterable[Any] | None = None) -> MetricsServer:
    """Serve ``metrics`` at ``http://addr:port/metrics`` until ``close()``.

    The application's own metrics are served with them: those of
    ``registries``, by default ``prometheus_client.REGISTRY`` (where a
    ``Counter(...)`` made without ``registry=`` lives, with the process
    metrics); ``registries=()`` serves the library's alone. ``/healthz`` and
    ``/readyz`` answer from ``health`` and ``ready`` (e.g. :meth:`App.health`
    and :meth:`App.readiness`; settable later on the returned server): 200
    and a JSON body when ok, 503 otherwise; for Kubernetes probes. Serving runs
    on a daemon thread: nothing here blocks the event loop. Raises ``OSError``
    if the port cannot be bound.
    """
    prom = _prometheus()
    chosen = [metrics.registry, *(registries if registries is not None else (prom.REGISTRY,))]
    unique = [r for i, r in enumerate(chosen) if all(r is not o for o in chosen[:i])]
    metrics_app = prom.make_wsgi_app(_Together(unique))
    holder: list[MetricsServer] = []  # the server object, once made: its checks are live

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, detail = holder[0].probe(path)
            body = json.dumps({"ok": ok, **detail}, default=str).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        result: list[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(addr, port, app, _ThreadingServer, handler_class=_Quiet)
    holder.append(MetricsServer(server, health, ready))
    threading.Thread(target=server.serve_forever, name="mlops_async.metrics",
                     daemon=True).start()
    return holder[0]
