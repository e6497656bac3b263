"""While the broker is down, a poll waits its timeout instead of returning at once.

``get_messages(timeout=1)`` used to return [] at once during an outage, so a
polling loop spun a core (thousands of calls in 3 s). Each call now takes its
timeout; ``receive``, ``receive_many`` and ``batches`` wait with backoff. Checked
against a closed port and against a broker killed under a live subscription,
on Redis and Kafka, by counting calls and the process CPU used in a window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from mlops_async import Consumer, Producer

from ..brokers import Server, free_port, redis_server, tansu_server
from ..conftest import make_msg

WINDOW = 3.0


def _opts(url: str) -> dict[str, object]:
    if url.startswith("kafka+confluent"):
        return {"connect_timeout": 0.5, "session.timeout.ms": 3000}
    if url.startswith("kafka"):
        return {"connect_timeout": 0.5, "session_timeout_ms": 3000, "heartbeat_interval_ms": 300}
    return {"socket_connect_timeout": 0.5}


def _closed(kind: str) -> str:
    port = free_port()
    return f"redis://127.0.0.1:{port}/0" if kind == "redis" else f"{kind}://127.0.0.1:{port}"


async def _count_polls(c: Consumer, timeout: float) -> tuple[int, float]:
    """get_messages calls made in WINDOW seconds, and the CPU seconds they used."""
    calls = 0
    cpu = time.process_time()
    loop = asyncio.get_running_loop()
    end = loop.time() + WINDOW
    while loop.time() < end:
        assert await c.get_messages(timeout=timeout) == []
        calls += 1
    return calls, time.process_time() - cpu


@pytest.mark.parametrize("kind", ["redis", "kafka", "kafka+confluent"])
async def test_get_messages_honours_its_timeout_against_a_closed_port(kind: str) -> None:
    url = _closed(kind)
    async with Consumer(url, topic="t", group="g", **_opts(url)) as c:
        calls, cpu = await _count_polls(c, timeout=1.0)
    assert calls <= 2 * WINDOW  # about one a second, not thousands
    assert cpu < WINDOW / 2  # a spinning loop burns the whole window


@pytest.mark.parametrize("kind", ["redis", "kafka"])
@pytest.mark.parametrize("how", ["receive", "receive_many", "batches"])
async def test_waiting_calls_back_off_against_a_closed_port(kind: str, how: str) -> None:
    url = _closed(kind)
    async with Consumer(url, topic="t", group="g", **_opts(url)) as c:
        cpu = time.process_time()
        if how == "receive":
            call = c.receive()
        elif how == "receive_many":
            call = c.receive_many(10, 0.05)
        else:
            call = anext(aiter(c.batches(10, 0.05)))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(WINDOW):
                await call
        assert time.process_time() - cpu < WINDOW / 2


@pytest.fixture(params=["redis", "kafka"])
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, Server]]:
    server = redis_server() if request.param == "redis" else tansu_server()
    server.start()
    try:
        url = (f"redis://127.0.0.1:{server.port}/0" if request.param == "redis"
               else f"kafka://127.0.0.1:{server.port}")
        yield url, server
    finally:
        server.stop()


@pytest.mark.slow
async def test_get_messages_honours_its_timeout_after_the_broker_died(
    broker: tuple[str, Server], unique: Callable[[str], str]
) -> None:
    url, server = broker
    topic = unique("down")
    async with Producer(url, topic=topic) as p:
        await p.send(make_msg(0), flush=True)
    async with Consumer(url, topic=topic, group=unique("g"), **_opts(url)) as c:
        async with asyncio.timeout(30):
            while not await c.get_messages(timeout=1):
                pass
        server.stop(kill=True)
        calls, cpu = await _count_polls(c, timeout=1.0)
    assert calls <= 2 * WINDOW
    assert cpu < WINDOW / 2
