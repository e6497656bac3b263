"""What tests/kafka/test_sharing.py and tests/confluent/test_sharing.py share.

Kafka shares a group's work by partition: a slow stage's members each get the
records of the partitions assigned to them. These helpers start N members on
one topic, wait until the group has given every partition to someone, then
send records and count what each member handled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.partitioner import murmur2

from mlops_async import Admin, Consumer, MLOpsMessage, Producer
from mlops_async.backends import Delivery, create_backend

from .conftest import make_msg

SLOW = 0.3  # seconds a member takes per message


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_topic(url: str, partitions: int) -> str:
    topic = name("share")
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=partitions)
    return topic


def assigned(consumer: Consumer[Any]) -> int:
    """How many partitions the group gave this member (read from the backend's client:
    the test waits for a settled group before it sends, so the split is not a rebalance)."""
    sub: Any = consumer._sub
    if sub is None:
        return 0
    if hasattr(sub, "_assigned"):  # kafka+confluent://: kept by the rebalance callbacks
        return len(sub._assigned)
    return len(sub.consumer.assignment())  # kafka://: aiokafka's subscription state


async def share(url: str, members: int, n: int, options: Mapping[str, Any],
                producer_options: Mapping[str, Any], partitions: int = 4) -> list[int]:
    """``members`` slow consumers of one group on a ``partitions``-partition topic; ``n``
    keyless records sent once every partition is assigned. How many each member handled."""
    topic, group = await make_topic(url, partitions), name("g")
    consumers: list[Consumer[MLOpsMessage]] = [
        Consumer(url, topic=topic, group=group, auto_offset_reset="earliest", **options)
        for _ in range(members)]
    handled = [0] * members
    done = asyncio.Event()

    async def member(k: int) -> None:
        async for _msg in consumers[k]:
            await asyncio.sleep(SLOW)  # a slow stage: an inference call, a training step
            handled[k] += 1
            if sum(handled) >= n:
                done.set()

    for c in consumers:
        await c.start()
    tasks = [asyncio.create_task(member(k)) for k in range(members)]
    try:
        async with asyncio.timeout(60):  # every member joined and has its partitions
            while not (all(assigned(c) for c in consumers)
                       and sum(assigned(c) for c in consumers) == partitions):
                await asyncio.sleep(0.1)
        async with Producer(url, topic=topic, **producer_options) as p:
            for i in range(n):
                await p.send(make_msg(i))
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in consumers:
            await c.close()
    return handled


def assert_even(handled: Sequence[int], n: int) -> None:
    """Every member handled within one message of an even split."""
    assert sum(handled) >= n
    even = n / len(handled)
    assert all(abs(h - even) <= 1 for h in handled), f"split {handled}, even is {even:g}"


async def read_all(url: str, topic: str, n: int) -> list[Delivery]:
    """The first ``n`` records of ``topic``, read without a group."""
    backend = create_backend(url)
    await backend.connect()
    out: list[Delivery] = []
    try:
        sub = await backend.subscribe([topic], group=None, auto_offset_reset="earliest")
        async with asyncio.timeout(30):
            while len(out) < n:
                out += await sub.fetch(n, 0.5)
    finally:
        await backend.close()
    return out


def hashed(key: bytes, partitions: int) -> int:
    """Where Kafka's murmur2 partitioner (the Java client's) puts ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def send_keyed(url: str, topic: str, keys: Sequence[str], **producer_options: Any) -> None:
    async with Producer(url, topic=topic, **producer_options) as p:
        for i, key in enumerate(keys):
            await p.send(make_msg(i), key=key)


async def partitions_reached(url: str, topic: str, n: int, options: Mapping[str, Any],
                             wait: float) -> tuple[set[int], set[int]]:
    """Round-robin ``n`` records to a 2-partition ``topic``; make it a 4-partition topic
    (deleted and created again: the test broker cannot add partitions), wait ``wait`` s,
    send ``n`` more with the same producer: the partitions each half reached."""
    async with Producer(url, topic=topic, partitioner="round_robin", **options) as p:
        await p.send_many([make_msg(i) for i in range(n)], flush=True)
        first = {d.partition for d in await read_all(url, topic, n)}
        async with Admin(url) as admin:
            await admin.delete_topic(topic)
            await admin.create_topic(topic, partitions=4)
        await asyncio.sleep(wait)
        for i in range(n, 2 * n):  # one at a time: a refresh the first one started lands
            await p.send(make_msg(i), flush=True)
            await asyncio.sleep(0.05)
    second = {d.partition for d in await read_all(url, topic, n)}
    return first, second
