"""The backend contract: the same tests, unchanged, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from mlops_async import Consumer, DeadLetter, MLOpsMessage, Producer
from mlops_async.backends import Record, create_backend

from ..conftest import make_msg
from .conftest import Bus


def consumer(
    bus: Bus, topic: str | list[str] | None, group: str | None = None, **kw: object
) -> Consumer[MLOpsMessage]:
    opts = {**bus.consumer_options, **kw}
    opts.setdefault("auto_offset_reset", "earliest")
    return Consumer(bus.url, topic=topic, group=group, **opts)  # type: ignore[arg-type]


def producer(
    bus: Bus, topic: str | list[str] | None = None, **kw: object
) -> Producer[MLOpsMessage]:
    return Producer(bus.url, topic=topic, **{**bus.producer_options, **kw})  # type: ignore[arg-type]


async def collect(c: Consumer[MLOpsMessage], n: int, timeout: float = 30.0) -> list[MLOpsMessage]:
    out: list[MLOpsMessage] = []

    async def run() -> None:
        async for msg in c:
            out.append(msg)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def drain(c: Consumer[MLOpsMessage], quiet: float) -> list[MLOpsMessage]:
    """Everything that arrives until nothing has for ``quiet`` seconds."""
    out: list[MLOpsMessage] = []
    while True:
        got = await c.get_messages(timeout=quiet)
        if not got:
            return out
        out.extend(got)


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


async def test_send_then_iterate_in_order(bus: Bus) -> None:
    topic = bus.topic()
    sent = [make_msg(i) for i in range(50)]
    async with producer(bus, topic) as p:
        for m in sent:
            await p.send(m)
        await p.flush()
    async with consumer(bus, topic, bus.group()) as c:
        got = await collect(c, 50)
    assert ids(got) == list(range(50))
    assert all(m.topic == topic for m in got)
    assert [m.id for m in got] == [m.id for m in sent]
    assert got[7].user_message == "record 7" and got[7].creator == "etl-1"


async def test_send_with_flush_and_send_many(bus: Bus) -> None:
    topic = bus.topic()
    async with producer(bus, topic) as p:
        await p.send(make_msg(0), flush=True)
        await p.send_many([make_msg(i) for i in range(1, 10)], flush=True)
        assert p.stats()["buffered"] == 0
    async with consumer(bus, topic, bus.group()) as c:
        assert sorted(ids(await collect(c, 10))) == list(range(10))


async def test_one_send_goes_to_every_topic(bus: Bus) -> None:
    t1, t2 = bus.topic(), bus.topic()
    async with producer(bus, [t1, t2]) as p:
        await p.send(make_msg(1), flush=True)
    async with consumer(bus, [t1, t2], bus.group()) as c:
        got = await collect(c, 2)
    assert sorted(m.topic or "" for m in got) == sorted([t1, t2])


async def test_get_messages_filter_and_acknowledges_filtered(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    async with producer(bus, topic) as p:
        await p.send_many([make_msg(i) for i in range(20)], flush=True)
    async with consumer(bus, topic, group) as c:
        got: list[MLOpsMessage] = []
        while len(got) < 10:
            got += await c.get_messages(lambda m: m.additional_arguments["i"] % 2 == 0, timeout=5)
    assert ids(got) == list(range(0, 20, 2))
    # Everything, kept or filtered out, was acknowledged: the group has nothing left.
    async with consumer(bus, topic, group) as c:
        assert await drain(c, bus.quiet) == []


async def test_get_messages_returns_empty_list_when_idle(bus: Bus) -> None:
    async with consumer(bus, bus.topic(), bus.group()) as c:
        assert await c.get_messages(timeout=0.2) == []
    async with consumer(bus, None) as c:
        assert c.get_subscriptions() == []
        assert await c.get_messages(timeout=0.05) == []


async def test_subscribe_unsubscribe_and_subscriptions(bus: Bus) -> None:
    t1, t2 = bus.topic(), bus.topic()
    async with producer(bus) as p:
        await p.send(make_msg(1), topic=t1)
        await p.send(make_msg(2), topic=t2, flush=True)
    async with consumer(bus, None, bus.group()) as c:
        assert c.get_subscriptions() == []
        await c.subscribe(t1)
        await c.subscribe([t1, t2])
        assert c.get_subscriptions() == [t1, t2]
        got = await collect(c, 2)
        assert sorted(ids(got)) == [1, 2]
        await c.unsubscribe()
        assert c.get_subscriptions() == []
        assert await c.get_messages(timeout=0.05) == []


async def test_iteration_waits_for_a_subscription(bus: Bus) -> None:
    topic = bus.topic()
    async with producer(bus, topic) as p:
        await p.send(make_msg(5), flush=True)
    async with consumer(bus, None, bus.group()) as c:
        task = asyncio.create_task(collect(c, 1))
        await asyncio.sleep(0.05)
        assert not task.done()
        await c.subscribe(topic)
        assert ids(await task) == [5]


async def test_every_group_gets_every_message(bus: Bus) -> None:
    topic = bus.topic()
    async with producer(bus, topic) as p:
        await p.send_many([make_msg(i) for i in range(10)], flush=True)
    async with consumer(bus, topic, bus.group()) as a, consumer(bus, topic, bus.group()) as b:
        assert sorted(ids(await collect(a, 10))) == list(range(10))
        assert sorted(ids(await collect(b, 10))) == list(range(10))


async def test_no_group_means_broadcast(bus: Bus) -> None:
    topic = bus.topic()
    async with producer(bus, topic) as p:
        await p.send_many([make_msg(i) for i in range(5)], flush=True)
    async with consumer(bus, topic) as a, consumer(bus, topic) as b:
        assert sorted(ids(await collect(a, 5))) == list(range(5))
        assert sorted(ids(await collect(b, 5))) == list(range(5))


async def test_latest_skips_what_was_sent_before(bus: Bus) -> None:
    topic = bus.topic()
    async with producer(bus, topic) as p:
        await p.send(make_msg(0), flush=True)
        async with consumer(bus, topic, bus.group(), auto_offset_reset="latest") as c:
            await c.get_messages(timeout=bus.quiet)  # joined, positioned at the end
            await p.send(make_msg(1), flush=True)
            got = await collect(c, 1)
    assert ids(got) == [1]


async def test_group_members_share_the_work(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    await bus.create_topic(topic, partitions=2)
    n = 200
    seen: dict[str, list[int]] = {"a": [], "b": []}
    async with consumer(bus, topic, group) as a, consumer(bus, topic, group) as b:
        await a.get_messages(timeout=bus.quiet)
        await b.get_messages(timeout=bus.quiet)
        async with producer(bus, topic) as p:
            for i in range(n):
                await p.send(make_msg(i), key=str(i))
            await p.flush()

        async def take(name: str, c: Consumer[MLOpsMessage]) -> None:
            while len(set(seen["a"]) | set(seen["b"])) < n:
                seen[name] += ids(await c.get_messages(timeout=0.2))

        await asyncio.wait_for(asyncio.gather(take("a", a), take("b", b)), 60)
    together = seen["a"] + seen["b"]
    assert set(together) == set(range(n)), "none lost"
    if not bus.rebalances:
        assert len(together) == n, "every message once"


async def test_unfinished_messages_go_to_another_member(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    async with producer(bus, topic) as p:
        await p.send_many([make_msg(i) for i in range(10)], flush=True)
    done: list[int] = []
    with pytest.raises(RuntimeError):
        async with consumer(bus, topic, group) as c:
            async for msg in c:
                if msg.additional_arguments["i"] == 4:
                    raise RuntimeError("crash while processing 4")
                done.append(msg.additional_arguments["i"])
    assert done == [0, 1, 2, 3]
    async with consumer(bus, topic, group) as c:
        rest = await collect(c, 6)
    assert ids(rest)[:1] == [4]  # the one in hand when it crashed comes back first
    assert sorted(set(done) | set(ids(rest))) == list(range(10))


async def test_break_then_close_acknowledges_what_was_processed(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    async with producer(bus, topic) as p:
        await p.send_many([make_msg(i) for i in range(10)], flush=True)
    async with consumer(bus, topic, group) as c:
        async for msg in c:
            if msg.additional_arguments["i"] == 3:
                break
    async with consumer(bus, topic, group) as c:
        assert ids(await collect(c, 6)) == [4, 5, 6, 7, 8, 9]


async def test_manual_commit(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    async with producer(bus, topic) as p:
        await p.send_many([make_msg(i) for i in range(6)], flush=True)
    async with consumer(bus, topic, group, commit="manual") as c:
        await collect(c, 3)
        await c.commit()
        await collect(c, 3)  # 3..5 handed out, never committed
    async with consumer(bus, topic, group) as c:
        assert sorted(ids(await collect(c, 3))) == [3, 4, 5]


async def test_close_is_idempotent_and_ends_iteration(bus: Bus) -> None:
    c = consumer(bus, bus.topic(), bus.group())
    await c.start()
    await c.close()
    await c.close()
    assert [m async for m in c] == []
    p = producer(bus, bus.topic())
    await p.start()
    await p.close()
    await p.close()


async def test_undecodable_payload_goes_to_dead_letters_and_neighbours_arrive(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    raw = create_backend(bus.url, **bus.producer_options)
    await raw.connect()
    try:
        async with producer(bus, topic) as p:
            await p.send(make_msg(0), flush=True)
            await raw.publish([Record(topic, b"\x01not msgpack at all")])
            await p.send(make_msg(2), flush=True)
    finally:
        await raw.close()
    async with consumer(bus, topic, group) as c:
        got: list[MLOpsMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        # Two producers may have used two partitions: read until both good ones
        # arrived and the bad one was met (and dead-lettered) wherever it sits.
        while (len(got) < 2 or not c.stats()["dead_lettered"]) and loop.time() < deadline:
            got += await c.get_messages(timeout=1)
        assert sorted(ids(got)) == [0, 2]
        assert c.stats()["dead_lettered"] == 1
    async with Consumer(
        bus.url,
        topic=f"{topic}.dlq",
        group=bus.group(),
        schema=DeadLetter,
        auto_offset_reset="earliest",
        **bus.consumer_options,
    ) as dlq:
        letter = await asyncio.wait_for(dlq.__anext__(), 30)
    assert letter.original == b"\x01not msgpack at all"
    assert letter.source_topic == topic and letter.error_type == "DecodeError"
    assert "MLOpsMessage" in letter.error and topic in letter.error
