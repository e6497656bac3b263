"""With no broker, lenient calls return within their bounds: nothing stalls the pipeline."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_async import BusUnavailable, Producer

from ...brokers import free_port
from ...conftest import make_msg

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def nowhere() -> str:
    """A Redis URL where nothing listens: connections are refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_lenient_flush_returns_after_flush_timeout_with_messages_queued(
    nowhere: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlops_async")
    async with asyncio.timeout(10):
        p: Producer = Producer(nowhere, topic="t", flush_timeout=0.3, close_timeout=0.3)
        await p.start()
        await p.send(make_msg(1), flush=True)  # returns: bounded, not confirmed
        await p.flush()
        assert p.stats()["buffered"] == 1 and p.stats()["outage"]
        with pytest.raises(TimeoutError):  # an explicit bound is the caller's: it raises
            await p.flush(timeout=0.1)
        await p.close()
    assert any("not confirmed" in r.message for r in caplog.records)
    assert any("undelivered" in r.message and r.levelno == logging.ERROR for r in caplog.records)


async def test_strict_flush_raises_during_an_outage(nowhere: str) -> None:
    p: Producer = Producer(nowhere, topic="t", strict=True)
    with pytest.raises(BusUnavailable):
        await p.start()
    await p.close()


async def test_close_is_bounded_and_a_cancelled_close_still_releases(nowhere: str) -> None:
    p: Producer = Producer(nowhere, topic="t", flush_timeout=30, close_timeout=30)
    await p.start()
    await p.send(make_msg(1))
    closing = asyncio.ensure_future(p.close())
    await asyncio.sleep(0.2)
    closing.cancel()
    async with asyncio.timeout(5):  # not the 30 s close_timeout
        with pytest.raises(asyncio.CancelledError):
            await closing
    assert p._sender is not None and not p._sender.running
    assert p.backend is not None and getattr(p.backend, "redis", None) is None  # released
    await p.close()  # safe twice


async def test_task_status_never_waits_for_the_broker(nowhere: str) -> None:
    ran = asyncio.Event()
    p: Producer = Producer(nowhere, topic="status", flush_timeout=30, close_timeout=0.2)
    await p.start()
    async with asyncio.timeout(5):
        async with p.task("cid-1") as task:
            ran.set()  # the body runs at once, broker or not
            await task.progress(50)
            task.result(rows=3)
    assert ran.is_set()
    assert p.stats()["buffered"] == 3  # START, PROGRESS, COMPLETE stay queued
    await p.close()


def test_demo_names_the_broker_it_cannot_reach() -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_async", "demo", "--plain", "--url",
         f"kafka://127.0.0.1:{port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stderr and "cannot reach" in proc.stderr


async def test_kafka_outage_logs_one_warning_not_the_drivers_repeats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    url = f"kafka://127.0.0.1:{free_port()}"
    p: Producer = Producer(url, topic="t", flush_timeout=2.5, close_timeout=0.5,
                           connect_timeout=1)
    await p.start()
    await p.send(make_msg(1))
    await p.flush()  # ~2.5 s of reconnect attempts by the driver
    await p.close()
    driver = [r for r in caplog.records if r.name.startswith("aiokafka")]
    assert driver == [], [r.getMessage() for r in driver]
    ours = [r for r in caplog.records if "broker unavailable" in r.getMessage()]
    assert len(ours) == 1
