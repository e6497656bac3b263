"""Redis-specific behaviour against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mlops_async import Admin, Consumer, DeadLetter, MLOpsMessage, Producer
from mlops_async.backends import create_backend
from mlops_async.backends.redis import RedisBackend

from ..brokers import Server, free_port, redis_server
from ..conftest import make_msg

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def produce(url: str, topic: str, n: int, start: int = 0) -> None:
    async with Producer(url, topic=topic) as p:
        await p.send_many([make_msg(i) for i in range(start, start + n)], flush=True)


async def crash(be: object) -> None:
    """Drop a backend like a dying process would: connections gone, nothing handed back."""
    assert isinstance(be, RedisBackend)
    be._subs.clear()
    await be.close()


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


async def test_two_consumers_share_a_group_and_process_everything(redis_url: str) -> None:
    topic, group = name("rt"), name("g")
    n = 1000
    seen: list[list[int]] = [[], []]
    async with (
        Consumer(redis_url, topic=topic, group=group, prefetch=50) as a,
        Consumer(redis_url, topic=topic, group=group, prefetch=50) as b,
    ):
        await a.get_messages(timeout=0.1)
        await b.get_messages(timeout=0.1)
        await produce(redis_url, topic, n)

        async def run(k: int, c: Consumer[MLOpsMessage]) -> None:
            while sum(map(len, seen)) < n:
                seen[k] += ids(await c.get_messages(timeout=0.2))
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(run(0, a), run(1, b)), 60)
    assert sorted(seen[0] + seen[1]) == list(range(n))
    assert seen[0] and seen[1], "both members got work"


def start_worker(
    url: str, topic: str, group: str, out: str, delay: float, opts: dict[str, object]
) -> subprocess.Popen[bytes]:
    with open(out + ".err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.worker", url, topic, group, out, str(delay),
             json.dumps(opts)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
        )


def lines(path: str) -> list[int]:
    text = Path(path).read_text() if os.path.exists(path) else ""
    return [int(x) for x in text.split() if x.isdigit()]


async def test_sigkill_mid_batch_pending_entries_are_claimed(redis_url: str) -> None:
    topic, group = name("rt"), name("g")
    out = os.path.join(tempfile.mkdtemp(), "victim.txt")
    n = 300
    await produce(redis_url, topic, n)
    victim = start_worker(redis_url, topic, group, out, 0.005, {"claim_idle_ms": 1000})
    try:
        deadline = time.monotonic() + 30
        while len(lines(out)) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    done_by_victim = lines(out)
    assert 0 < len(done_by_victim) < n
    got: list[int] = []
    async with Consumer(redis_url, topic=topic, group=group, claim_idle_ms=1000,
                        claim_interval=0.2) as survivor:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(got) | set(done_by_victim) >= set(range(n)):
            got += ids(await survivor.get_messages(timeout=0.3))
    everything = Counter(done_by_victim + got)
    assert set(everything) == set(range(n)), "zero lost"
    dupes = sum(c - 1 for c in everything.values())
    # A duplicate is only ever a message the victim finished but could not acknowledge.
    assert dupes <= len(done_by_victim), f"{dupes} duplicates"


async def test_restart_under_the_same_name_rereads_its_pending_first(redis_url: str) -> None:
    topic, group = name("rt"), name("g")
    await produce(redis_url, topic, 10)
    be = create_backend(redis_url, consumer_name="worker-1")
    await be.connect()
    sub = await be.subscribe([topic], group=group, auto_offset_reset="earliest")
    taken = await sub.fetch(4, 1.0)  # then "crash": no ack, no close
    assert [d.offset for d in taken]
    # What the name holds: the 4 handed out, and the read-ahead sent with them.
    assert be.redis is not None
    await asyncio.sleep(0.1)
    pending = await be.redis.xpending_range(be.key(topic), group, min="-", max="+", count=100,
                                            consumername="worker-1")
    held = len(pending)
    assert held in (4, 8), held
    await crash(be)
    async with Consumer(redis_url, topic=topic, group=group, consumer_name="worker-1",
                        auto_offset_reset="earliest") as c:
        first = await c.get_messages(timeout=1)
        rest = await c.get_messages(timeout=1)
    assert ids(first) == list(range(held))
    assert ids(rest) == list(range(held, 10))


async def test_poison_message_goes_to_dead_letters_after_max_deliveries(redis_url: str) -> None:
    """Redis counts deliveries; the Consumer's max_deliveries policy dead-letters the entry."""
    topic, group = name("rt"), name("g")
    await produce(redis_url, topic, 1)
    opts = {"claim_idle_ms": 0, "claim_interval": 0.0}
    deliveries = 0
    for k in range(5):  # each consumer takes the entry and gives up without acking it
        async with Consumer(redis_url, topic=topic, group=group, consumer_name=f"crasher-{k}",
                            auto_offset_reset="earliest", max_deliveries=2, **opts) as c:
            got = await c.get_messages(timeout=0.3)
            deliveries += len(got)
            await c.close(processed=False)
        if not got:
            break
    assert deliveries == 2, "delivered max_deliveries times, then dead-lettered"
    async with Consumer(redis_url, topic=f"{topic}.dlq", group=name("d"), schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        (letter,) = await dlq.get_messages(timeout=2)
    assert letter.source_topic == topic and letter.attempts == 3
    assert letter.error_type == "TooManyDeliveries" and "max_deliveries=2" in letter.error
    async with Consumer(redis_url, topic=topic, group=group, **opts) as c:
        assert await c.get_messages(timeout=0.3) == []  # acknowledged: never loops again


async def test_trimmed_pending_entries_are_counted(redis_url: str) -> None:
    topic, group = name("rt"), name("g")
    await produce(redis_url, topic, 5)
    be = create_backend(redis_url, consumer_name="holder")
    await be.connect()
    sub = await be.subscribe([topic], group=group, auto_offset_reset="earliest")
    assert len(await sub.fetch(5, 1.0)) == 5  # pending, never acknowledged
    async with Producer(redis_url, topic=topic, maxlen=10) as p:
        await p.send_many([make_msg(i) for i in range(1000)], flush=True)
    claimer = create_backend(redis_url, consumer_name="claimer", claim_idle_ms=0)
    assert isinstance(claimer, RedisBackend)
    await claimer.connect()
    csub = await claimer.subscribe([topic], group=group, auto_offset_reset="earliest")
    await csub.fetch(10, 0.2)
    assert claimer.trimmed_pending == 5
    await claimer.close()
    await crash(be)


async def test_server_killed_and_restarted_with_aof_nothing_acknowledged_is_lost() -> None:
    server: Server = redis_server(appendonly=True)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    topic = "durable"
    try:
        async with Producer(url, topic=topic, socket_timeout=2.0, socket_connect_timeout=1.0) as p:
            await p.send_many([make_msg(i) for i in range(100)], flush=True)
            server.stop(kill=True)
            for i in range(100, 200):
                await p.send(make_msg(i))  # lenient: queued while the server is down
            await asyncio.sleep(1.0)
            assert p.stats()["outage"]
            server.start()
            await p.flush(timeout=60)  # explicit: a lenient flush stops at flush_timeout
        async with Consumer(url, topic=topic, group="g", auto_offset_reset="earliest") as c:
            got: list[int] = []
            while len(got) < 200:
                batch = ids(await c.get_messages(timeout=2))
                assert batch, f"stalled after {len(got)}"
                got += batch
        assert sorted(set(got)) == list(range(200))
    finally:
        server.stop()


async def test_consumer_keeps_iterating_across_a_server_restart() -> None:
    server = redis_server(appendonly=True)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    try:
        async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest",
                            socket_timeout=2.0, socket_connect_timeout=1.0) as c:
            await produce(url, "t", 3)
            got = [(await c.__anext__()).additional_arguments["i"] for _ in range(3)]
            server.stop(kill=True)
            task = asyncio.create_task(c.__anext__())
            await asyncio.sleep(1.5)
            assert not task.done()
            server.start()
            await produce(url, "t", 1, start=3)
            got.append((await asyncio.wait_for(task, 30)).additional_arguments["i"])
        assert got == [0, 1, 2, 3]
    finally:
        server.stop()


async def test_strict_mode_raises_without_a_server() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    from mlops_async import BusUnavailable

    with pytest.raises(BusUnavailable):
        await Producer(url, topic="x", strict=True).start()
    with pytest.raises(BusUnavailable):
        await Consumer(url, topic="x", strict=True).start()


async def test_cancellation_storm_leaks_no_connection_and_crosses_no_reply(redis_url: str) -> None:
    be = create_backend(redis_url, max_connections=4, pool_timeout=5)
    assert isinstance(be, RedisBackend)
    await be.connect()
    redis = be.redis
    assert redis is not None
    rng = random.Random(7)
    prefix = name("storm")

    async def roundtrip(i: int) -> None:
        key = f"{prefix}:{i}"
        await redis.set(key, str(i))
        value = await redis.get(key)
        assert value == str(i).encode(), f"reply for {key} was {value!r}"

    async def storm() -> int:
        tasks = [asyncio.create_task(roundtrip(i)) for i in range(300)]
        await asyncio.sleep(0)
        for t in tasks:
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.002)
                t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        crossed = [r for r in results if isinstance(r, AssertionError)]
        assert not crossed, crossed[:3]
        return sum(1 for r in results if r is None)

    completed = await asyncio.wait_for(storm(), 60)
    assert completed > 0
    pool = be._pool
    assert len(pool._in_use_connections) == 0, "a cancelled command leaked its connection"
    # The pool still works, for the library's own operations too.
    topic = name("after-storm")
    sub = await be.subscribe([topic], group="g", auto_offset_reset="earliest")
    fetches = [asyncio.create_task(sub.fetch(10, 0.5)) for _ in range(8)]
    await asyncio.sleep(0.01)
    for t in fetches:
        t.cancel()
    await asyncio.gather(*fetches, return_exceptions=True)
    await produce(redis_url, topic, 5)
    got = []
    while len(got) < 5:
        got += await sub.fetch(10, 1.0)
    assert sorted(d.offset for d in got) == sorted({d.offset for d in got})
    await be.close()


async def test_admin_every_method(redis_url: str) -> None:
    topic, group = name("adm"), name("g")
    async with Admin(redis_url) as admin:
        await admin.create_topic(topic)
        await admin.create_topic(topic)
        assert topic in {t.name for t in await admin.list_topics()}
        await produce(redis_url, topic, 30)
        async with Consumer(redis_url, topic=topic, group=group,
                            auto_offset_reset="earliest") as c:
            got = 0
            while got < 20:
                got += len(await c.get_messages(timeout=1, max_messages=20 - got))
            await c.commit()
        (lag,) = await admin.group_lag(group)
        assert (lag.end_offset, lag.committed, lag.lag) == (30, 20, 10)
        groups = {g.group: g for g in await admin.describe_groups()}
        assert groups[group].topics == (topic,)
        assert sum(p.lag for p in groups[group].lag) == 10
        await admin.delete_topic(topic)
        await admin.delete_topic(topic)
        assert topic not in {t.name for t in await admin.list_topics()}


def test_password_never_shows() -> None:
    be = create_backend("redis://user:hunter2-secret@localhost:6379/0")
    assert "hunter2" not in repr(be)


@pytest.mark.redis
async def test_redis_nack_redelivers_only_what_was_nacked(redis_url: str) -> None:
    topic, group = f"rn-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    async with Producer(redis_url, topic=topic) as p:
        await p.send_many([make_msg(i) for i in range(3)], flush=True)
    async with Consumer(redis_url, topic=topic, group=group, auto_offset_reset="earliest",
                        commit="manual", poll_timeout=0.2, max_deliveries=3) as c:
        held = [await c.receive() for _ in range(3)]
        failing_msg, failing = held[2]
        for _ in range(4):
            await c.nack(failing)
            got = await c.get_messages(timeout=0.3)
            # The two still in hand are never handed out again, nor counted again.
            assert [m.id for m in got] in ([], [failing_msg.id])
            if got:
                failing = c.envelopes[-1]
        assert c.dead_lettered == 1  # only the one nacked past max_deliveries
        assert held[0][1].attempts == held[1][1].attempts == 0
