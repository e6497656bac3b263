"""Prometheus metrics for stream-engine workers (the ``metrics`` extra).

Every series carries the app name; never message content or ids.

- ``messages_consumed_count{app,queue,status="success"|"fail"}``
- ``messages_produced_count{app,source,destination}``
- ``process_time_seconds{app,process_name="component"|"cycle"}`` (histogram)
- ``dead_letters_total{app,queue,reason}``
- ``retries_total{app,queue}``
- ``consumer_lag{app,queue}`` where the backend can tell

The same server answers ``/healthz`` and ``/readyz`` for Kubernetes probes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import MissingDependency

__all__ = ["Metrics", "MetricsServer", "serve_metrics"]


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependency(
            "metrics need the 'metrics' extra: pip install 'mlops-async[metrics]'"
        ) from exc
    return prometheus_client


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

    def consumed_ok(self, queue: str) -> None:
        self.consumed.labels(self.app, queue, "success").inc()

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


Check = Callable[[], tuple[bool, dict[str, Any]]]


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` served over HTTP from a daemon thread."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.port: int = server.server_address[1]

    def close(self) -> None:
        """Stop serving and release the socket; safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        return None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_metrics(metrics: Metrics, port: int, addr: str = "127.0.0.1", *,
                  health: Check | None = None, ready: Check | None = None) -> MetricsServer:
    """Serve ``metrics`` at ``http://addr:port/metrics`` until ``close()``.

    ``/healthz`` and ``/readyz`` answer from ``health`` and ``ready`` (e.g.
    :meth:`App.health` and :meth:`App.readiness`, which only read state):
    200 and a JSON body when ok, 503 otherwise; for Kubernetes probes.
    """
    prom = _prometheus()
    metrics_app = prom.make_wsgi_app(metrics.registry)
    checks = {"/healthz": health, "/readyz": ready}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in checks:
            check = checks[path]
            try:
                ok, detail = check() if check is not None else (True, {})
            except Exception as exc:  # a probe must answer, not hang or crash the server
                ok, detail = False, {"error": repr(exc)}
            body = json.dumps({"ok": ok, **detail}, default=str).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        result: list[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(addr, port, app, _ThreadingServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="mlops_async.metrics",
                     daemon=True).start()
    return MetricsServer(server)
