"""Where a consumer starts reading when it has no stored position, on every backend.

A new group starts at the beginning of what the broker keeps, so a stage that
starts after its producer loses nothing sent before it joined;
``auto_offset_reset="latest"`` still starts at the end (test_contract.py). A
consumer without a group has no stored position at all and starts at the end
unless told otherwise.
"""

from __future__ import annotations

import asyncio

from mlops_async import Consumer, Producer

from ..conftest import make_msg
from .conftest import Bus


async def _send(bus: Bus, topic: str, n: int) -> None:
    async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
        for i in range(n):
            await p.send(make_msg(i))
        await p.flush(timeout=30)


async def test_a_new_group_reads_what_was_sent_before_it_joined(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    await bus.create_topic(topic)
    await _send(bus, topic, 3)
    async with Consumer(bus.url, topic=topic, group=group, **bus.consumer_options) as c:
        got = []
        async with asyncio.timeout(20):
            async for msg in c:
                got.append(msg.additional_arguments["i"])
                if len(got) == 3:
                    break
    assert got == [0, 1, 2]


async def test_a_consumer_without_a_group_starts_at_the_end(bus: Bus) -> None:
    topic = bus.topic()
    await bus.create_topic(topic)
    await _send(bus, topic, 2)
    async with Consumer(bus.url, topic=topic, **bus.consumer_options) as c:
        got = await c.get_messages(timeout=bus.quiet)
    # Tansu answers "latest" with the start of the last batch + 1, so the last record
    # sent before may come (a known limit of the test broker); the first never does.
    assert 0 not in [m.additional_arguments["i"] for m in got]
