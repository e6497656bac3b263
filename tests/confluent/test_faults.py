"""kafka+confluent:// under the faults the aiokafka backend is tested with (tests/kafka).

SIGKILL mid-stream, a rebalance while processing, the broker killed and
restarted under a producer, a producer started before its broker: nothing
acknowledged is lost, nothing unfinished is committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections import Counter

import pytest

from mlops_async import Consumer, MLOpsMessage, Producer

from ..brokers import tansu_server
from ..conftest import make_msg
from ._helpers import consumer, ids, lines, make_topic, name, produce, start_worker, wait_ready

pytestmark = pytest.mark.kafka


@pytest.fixture
def url(kafka_bootstrap: str) -> str:
    return f"kafka+confluent://{kafka_bootstrap}"


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(url: str) -> None:
    topic, group = await make_topic(url, 3), name("g")
    tmp = tempfile.mkdtemp()
    victim_out = os.path.join(tmp, "victim.txt")
    victim = start_worker(url, topic, group, victim_out, delay=0.01)
    got: list[int] = []
    try:
        await wait_ready([victim_out])
        n = 400
        await produce(url, topic, n)
        deadline = time.monotonic() + 60
        while len(lines(victim_out)) < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert lines(victim_out), "the victim processed something before the kill"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        async with consumer(url, topic, group) as survivor:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                got += ids(await survivor.get_messages(timeout=1))
                if set(got) | set(lines(victim_out)) >= set(range(n)):
                    break
    finally:
        if victim.poll() is None:
            victim.kill()
    everything = Counter(lines(victim_out) + got)
    assert set(everything) == set(range(n)), "zero lost"
    duplicates = sum(c - 1 for c in everything.values())
    print(f"SIGKILL test (confluent): {duplicates} duplicate(s) of {n}")


async def test_rebalance_while_processing_loses_nothing(url: str) -> None:
    topic, group = await make_topic(url, 4), name("g")
    n = 400
    await produce(url, topic, n)
    seen: list[int] = []
    a = consumer(url, topic, group, prefetch=50)
    b = consumer(url, topic, group, prefetch=50)
    await a.start()

    async def slow(c: Consumer[MLOpsMessage]) -> None:
        async for m in c:
            seen.append(m.additional_arguments["i"])
            await asyncio.sleep(0.002)
            if set(seen) >= set(range(n)):
                return

    task_a = asyncio.create_task(slow(a))
    async with asyncio.timeout(60):
        while len(seen) < 50:
            await asyncio.sleep(0.05)
    await b.start()  # joins mid-stream: partitions move while A is processing
    task_b = asyncio.create_task(slow(b))
    _, pending = await asyncio.wait(
        [task_a, task_b], timeout=90, return_when=asyncio.FIRST_COMPLETED
    )
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await a.close()
    await b.close()
    assert set(seen) == set(range(n))


async def test_lenient_producer_started_before_the_broker_delivers_once_it_is_up() -> None:
    server = tansu_server()
    url = f"kafka+confluent://127.0.0.1:{server.port}"
    p = Producer(url, topic="early", connect_timeout=1.0, publish_timeout=2.0)
    await p.start()  # no broker yet: lenient mode starts anyway
    for i in range(10):
        await p.send(make_msg(i))
    await asyncio.sleep(0.5)
    assert p.stats()["outage"]
    server.start()
    try:
        await asyncio.wait_for(p.flush(timeout=60), 70)
        await p.close()
        async with consumer(url, "early", None) as c:
            got: list[int] = []
            async with asyncio.timeout(60):
                while len(got) < 10:
                    got += ids(await c.get_messages(timeout=5))
        assert sorted(got) == list(range(10))
    finally:
        await p.close()
        server.stop()


async def test_broker_killed_and_restarted_producer_resumes() -> None:
    server = tansu_server()
    server.start()
    url = f"kafka+confluent://127.0.0.1:{server.port}"
    try:
        async with Producer(url, topic="restart", publish_timeout=2.0) as p:
            await p.send(make_msg(0), flush=True)
            server.stop(kill=True)
            for i in range(1, 6):
                await p.send(make_msg(i))  # lenient: queued, not raised
            await asyncio.sleep(1.0)
            server.start()  # in-memory broker: earlier data is gone, new sends arrive
            await asyncio.wait_for(p.flush(timeout=60), 70)
            assert p.stats()["buffered"] == 0
        async with consumer(url, "restart", None) as c:
            got: list[int] = []
            async with asyncio.timeout(60):
                while not set(range(1, 6)) <= set(got):
                    got += ids(await c.get_messages(timeout=5))
        assert set(range(1, 6)) <= set(got), "what was sent during the outage arrived"
    finally:
        server.stop()
