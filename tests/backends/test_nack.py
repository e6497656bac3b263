"""consumer.nack(): a message handed back comes again promptly, on every backend."""

from __future__ import annotations

import asyncio

from mlops_async import Consumer, Producer

from ..conftest import make_msg
from .conftest import Bus


async def test_a_nacked_message_is_delivered_again_and_nothing_is_lost(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    await bus.create_topic(topic)
    async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
        await p.send_many([make_msg(i) for i in range(10)], flush=True)
    seen: list[int] = []
    nacked = False
    async with Consumer(bus.url, topic=topic, group=group, auto_offset_reset="earliest",
                        commit="manual", **bus.consumer_options) as c:
        async with asyncio.timeout(60):
            while set(seen) != set(range(10)) or not nacked:
                msg, d = await c.receive()
                i = msg.additional_arguments["i"]
                if i == 3 and not nacked:
                    nacked = True
                    await c.nack(d)  # on_fail: hand it back instead of acknowledging
                    continue
                seen.append(i)
                await c.ack(d)
        await c.commit()
    assert set(seen) == set(range(10)) and seen.count(3) == 1
    # Everything was acknowledged in the end: the group has nothing left.
    async with Consumer(bus.url, topic=topic, group=group, **bus.consumer_options) as again:
        assert await again.get_messages(timeout=bus.quiet) == []
