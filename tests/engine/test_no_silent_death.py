"""The engine never dies silently: bad records are dead-lettered, broken reads stop it loudly."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis.asyncio as redis_py

from mlops_async import App, AppFailed, Codec, Consumer, DeadLetter, MLOpsMessage
from mlops_async.app import PUMP_MAX_RESTARTS
from mlops_async.metrics import serve_metrics

from ..brokers import free_port
from ..conftest import make_msg
from .broken import app as broken_app

ROOT = Path(__file__).resolve().parents[2]
CODEC: Codec[MLOpsMessage] = Codec()


@pytest.mark.redis
async def test_app_relays_around_foreign_entries_and_stays_healthy(redis_url: str) -> None:
    name = f"nsd-{uuid.uuid4().hex[:8]}"
    app = App(name, url=redis_url)
    app.queue("in", value=f"{name}.in")
    app.queue("out", value=f"{name}.out")

    @app.handler(input="in", outputs=["out"])
    async def relay(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("out", msg)]

    r = redis_py.Redis.from_url(redis_url)
    try:
        await r.xadd(f"mlops:{name}.in", {b"v": CODEC.encode(make_msg(0))})
        await r.xadd(f"mlops:{name}.in", {b"v": CODEC.encode(make_msg(1)), b"h": b"junk"})
        await r.xadd(f"mlops:{name}.in", {b"x": b"no value"})
        await r.xadd(f"mlops:{name}.in", {b"v": CODEC.encode(make_msg(2))})
    finally:
        await r.aclose()
    async with app:
        got: list[MLOpsMessage] = []
        dead: list[DeadLetter] = []
        async with (
            Consumer(redis_url, topic=f"{name}.out", auto_offset_reset="earliest") as out,
            Consumer(redis_url, topic=f"{name}.in.dlq", schema=DeadLetter,
                     auto_offset_reset="earliest") as dlq,
        ):
            async with asyncio.timeout(20):
                while len(got) < 2 or len(dead) < 2:
                    got += await out.get_messages(timeout=0.1)
                    dead += await dlq.get_messages(timeout=0.1)
        ok, detail = app.health()
        assert ok, detail
        ready, _ = app.readiness()
        assert ready
    assert sorted(m.additional_arguments["i"] for m in got) == [0, 2]
    assert all(x.fields and x.handler == "relay" for x in dead)


async def test_a_pump_that_keeps_failing_stops_the_app_with_a_logged_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="mlops_async.app")
    with pytest.raises(AppFailed, match="disk on fire") as info:
        async with asyncio.timeout(20):
            await broken_app.run(install_signals=False)
    assert isinstance(info.value.__cause__, RuntimeError)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # Every failure is logged with its traceback: restarts, then the stop.
    assert len(errors) >= PUMP_MAX_RESTARTS
    assert all(r.exc_info is not None for r in errors)
    ok, detail = broken_app.health()
    assert not ok and "disk on fire" in detail["failure"]
    assert "disk on fire" in detail["last_errors"]["relay"]


def test_cli_run_exits_non_zero_when_the_app_cannot_go_on() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_async", "run", "tests.engine.broken:app"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "disk on fire" in proc.stderr


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_healthz_and_readyz_follow_the_app() -> None:
    url = f"memory://probe-{uuid.uuid4().hex[:8]}"
    app = App("probed", url=url, metrics=True)

    @app.handler(input="in", outputs=["out"])
    async def relay(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("out", msg)]

    port = free_port()
    assert app.metrics is not None
    server = serve_metrics(app.metrics, port, health=app.health, ready=app.readiness)
    try:
        assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 503  # not started
        async with app:
            status, body = await asyncio.to_thread(_get, port, "/healthz")
            assert status == 200 and body["pumps"] == {"relay": True}
            assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200
        assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 503  # stopped
        broken = App("broken-probe", url="broken://", sleep=_no_wait, metrics=True)

        @broken.handler(input="in", outputs=["out"])
        async def never(msg: MLOpsMessage) -> None:
            return None

        assert broken.metrics is not None
        server2 = serve_metrics(broken.metrics, free_port(), health=broken.health,
                                ready=broken.readiness)
        try:
            with pytest.raises(AppFailed):
                await broken.run(install_signals=False)
            status, body = await asyncio.to_thread(_get, server2.port, "/healthz")
            assert status == 503 and "disk on fire" in str(body["failure"])
        finally:
            server2.close()
    finally:
        server.close()


async def _no_wait(_: float) -> None:
    return None
