"""``consumer.batches()`` and envelopes, unchanged on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

from mlops_async import Consumer, DeadLetter, MLOpsMessage, Producer
from mlops_async.backends import Record, create_backend

from ..conftest import make_msg
from .conftest import Bus


def consumer(bus: Bus, topic: str, group: str | None, **kw: Any) -> Consumer[MLOpsMessage]:
    return Consumer(bus.url, topic=topic, group=group, auto_offset_reset="earliest",
                    **{**bus.consumer_options, **kw})


async def fill(bus: Bus, topic: str, n: int, start: int = 0) -> None:
    await bus.create_topic(topic)
    async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
        for i in range(start, start + n):
            await p.send(make_msg(i), key=f"k{i}", headers={"trace": f"t{i}"})
        await p.flush()


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


async def test_batches_are_bounded_ordered_and_carry_envelopes(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    await fill(bus, topic, 100)
    seen: list[int] = []
    async with consumer(bus, topic, group) as c:
        async with asyncio.timeout(60):
            async for batch in c.batches(max_messages=16, max_wait=0.05):
                assert 1 <= len(batch) <= 16
                envs = c.envelopes
                assert len(envs) == len(batch)
                for msg, env in zip(batch, envs, strict=True):
                    i = msg.additional_arguments["i"]
                    assert env.topic == topic and env.key == f"k{i}".encode()
                    assert dict(env.headers or ()) == {"trace": f"t{i}".encode()}
                    assert env.broker_time() is None or env.broker_time() > 1.6e9
                seen += ids(batch)
                if len(seen) >= 100:
                    break
    assert seen == list(range(100))


async def test_a_batch_is_acknowledged_only_after_the_body_finished(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    await fill(bus, topic, 30)
    first: list[int] = []
    async with consumer(bus, topic, group) as c:
        async with asyncio.timeout(60):
            batches = c.batches(max_messages=10, max_wait=0.05)
            first = ids(await batches.__anext__())
            second = ids(await batches.__anext__())  # the first batch is done now
            assert second
            await c.close(processed=False)  # "crash" while the second is in hand
            await batches.aclose()
    rest: list[int] = []
    async with consumer(bus, topic, group) as again:
        async with asyncio.timeout(60):
            while set(first) | set(rest) != set(range(30)):
                rest += ids(await again.get_messages(timeout=0.5))
    assert not set(first) & set(rest), "the finished batch was acknowledged"
    assert set(second) <= set(rest), "the unfinished batch is delivered again"


async def test_a_bad_payload_in_a_batch_is_dead_lettered_and_the_rest_arrive(bus: Bus) -> None:
    topic = bus.topic()
    await fill(bus, topic, 5)
    be = create_backend(bus.url)
    await be.connect()
    await be.publish([Record(topic, b"\x01not msgpack")])
    await be.close()
    await fill(bus, topic, 5, start=5)
    got: list[int] = []
    async with consumer(bus, topic, None) as c:
        async with asyncio.timeout(60):
            async for batch in c.batches(max_messages=4, max_wait=0.05):
                got += ids(batch)
                if len(got) == 10:
                    break
        assert c.dead_lettered == 1
    assert got == list(range(10))
    async with Consumer(bus.url, topic=f"{topic}.dlq", schema=DeadLetter,
                        auto_offset_reset="earliest", **bus.consumer_options) as dlq:
        async with asyncio.timeout(30):
            letters: list[DeadLetter] = []
            while not letters:
                letters = await dlq.get_messages(timeout=0.5)
    assert letters[0].original == b"\x01not msgpack"


async def test_cancelling_a_batches_loop_loses_nothing(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    n = 200
    await fill(bus, topic, n)
    done: list[int] = []
    c = consumer(bus, topic, group)
    await c.start()

    async def work() -> None:
        async for batch in c.batches(max_messages=7, max_wait=0.01):
            await asyncio.sleep(0.001)
            done.extend(ids(batch))

    task = asyncio.ensure_future(work())
    async with asyncio.timeout(60):
        while len(done) < 50:
            await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await c.close(processed=False)  # the batch in hand when cancelled was not finished
    rest: list[int] = []
    async with consumer(bus, topic, group) as again:
        async with asyncio.timeout(60):
            while set(done) | set(rest) != set(range(n)):
                rest += ids(await again.get_messages(timeout=0.5))
    assert set(done) | set(rest) == set(range(n))
