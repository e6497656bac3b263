"""The metrics server: library and application metrics together, health and readiness probes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

import prometheus_client as prom
import pytest

from mlops_async.metrics import Metrics, serve_metrics


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def aget(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, port, path)


def series(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_the_names_prometheus_exports_are_the_documented_ones() -> None:
    m = Metrics("app")
    m.consumed_ok("q")
    m.consumed_fail("q")
    m.produced_to("q", "out")
    m.timed("cycle", 0.01)
    m.dead_letter("q", "DecodeError")
    m.retried("q")
    m.set_lag("q", 3)
    names = series(prom.generate_latest(m.registry).decode())
    assert {"messages_consumed_count_total", "messages_produced_count_total",
            "process_time_seconds_bucket", "process_time_seconds_sum",
            "process_time_seconds_count", "dead_letters_total", "retries_total",
            "consumer_lag"} <= names


async def test_the_applications_metrics_are_served_next_to_the_librarys() -> None:
    mine = prom.Counter("test_metrics_predictions", "made by the application")  # default registry
    mine.inc(7)
    own = prom.CollectorRegistry()
    prom.Gauge("test_metrics_queue_depth", "in a registry of its own", registry=own).set(4)
    m = Metrics("both")
    m.consumed_ok("in")
    server = serve_metrics(m, 0)
    only_own = serve_metrics(m, 0, registries=[own])
    alone = serve_metrics(m, 0, registries=())
    try:
        status, text = await aget(server.port, "/metrics")
        assert status == 200
        assert 'messages_consumed_count_total{app="both",queue="in",status="success"} 1.0' in text
        assert "test_metrics_predictions_total 7.0" in text
        _, text = await aget(only_own.port, "/metrics")
        assert "test_metrics_queue_depth 4.0" in text and "test_metrics_predictions" not in text
        assert "messages_consumed_count_total" in text
        _, text = await aget(alone.port, "/metrics")
        assert "test_metrics_predictions" not in text and "messages_consumed_count_total" in text
        # Prometheus's name filter still works on the combined view.
        _, text = await aget(server.port, "/metrics?name[]=test_metrics_predictions_total")
        assert "test_metrics_predictions_total" in text and "messages_consumed" not in text
    finally:
        for s in (server, only_own, alone):
            s.close()
        prom.REGISTRY.unregister(mine)


async def test_a_metric_defined_twice_is_served_once(caplog: pytest.LogCaptureFixture) -> None:
    other = prom.CollectorRegistry()
    prom.Counter("retries", "the application's own, same name", registry=other).inc(5)
    m = Metrics("dup")
    m.retried("q")
    server = serve_metrics(m, 0, registries=[other, m.registry])
    try:
        with caplog.at_level(logging.WARNING, logger="mlops_async.metrics"):
            status, text = await aget(server.port, "/metrics")
        assert status == 200 and text.count("# TYPE retries_total counter") == 1
        assert 'retries_total{app="dup",queue="q"} 1.0' in text  # the library's came first
        assert "defined twice" in caplog.text
    finally:
        server.close()


async def test_probes_answer_from_the_checks_200_or_503_with_json() -> None:
    state: dict[str, Any] = {"alive": False, "ready": False}

    def health() -> tuple[bool, dict[str, Any]]:
        return state["alive"], {"app": "probed"}

    def ready() -> tuple[bool, dict[str, Any]]:
        return state["ready"], {"connected": {"h": state["ready"]}}

    server = serve_metrics(Metrics("probed"), 0, health=health, ready=ready)
    try:
        status, body = await aget(server.port, "/healthz")
        assert status == 503 and json.loads(body) == {"ok": False, "app": "probed"}
        state.update(alive=True, ready=True)
        status, body = await aget(server.port, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True
        status, body = await aget(server.port, "/readyz")
        assert status == 200 and json.loads(body)["connected"] == {"h": True}
    finally:
        server.close()
        server.close()  # safe twice


async def test_checks_can_be_wired_after_start_and_a_broken_one_is_503() -> None:
    server = serve_metrics(Metrics("late"), 0)
    try:
        assert (await aget(server.port, "/readyz"))[0] == 200  # nothing to check yet

        def broken() -> tuple[bool, dict[str, Any]]:
            raise RuntimeError("state unreadable")

        server.ready = broken
        status, body = await aget(server.port, "/readyz")
        assert status == 503 and "state unreadable" in json.loads(body)["error"]
        server.health = lambda: (True, {"late": True})
        assert json.loads((await aget(server.port, "/healthz"))[1]) == {"ok": True, "late": True}
    finally:
        await server.aclose()
        await server.aclose()


async def test_a_slow_check_does_not_hold_the_event_loop() -> None:
    # The check waits for the loop to tick: it can only answer if the loop runs meanwhile.
    ticked = threading.Event()

    def health() -> tuple[bool, dict[str, Any]]:
        return ticked.wait(10), {}

    server = serve_metrics(Metrics("slow"), 0, health=health)
    try:
        request = asyncio.create_task(aget(server.port, "/healthz"))
        await asyncio.sleep(0.05)
        ticked.set()
        assert (await request)[0] == 200
    finally:
        await server.aclose()
