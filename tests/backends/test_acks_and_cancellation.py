"""Acknowledgements within ``commit_interval`` on every path, and cancellation storms.

Both run unchanged on every backend. The acknowledged position is read
through the broker (Admin.group_lag: Kafka committed offsets, Redis XPENDING
and entries-read, the memory bus's cursor, PostgreSQL's cursor and leases),
never from the consumer's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mlops_async import Admin, Consumer, MLOpsMessage, Producer

from ..conftest import make_msg
from .conftest import Bus

INTERVAL = 0.3


async def acknowledged(bus: Bus, group: str, topic: str, total: int) -> int:
    """How many of the ``total`` records of ``topic`` the broker holds as done for ``group``.

    Every backend's lag counts what the group has not acknowledged yet
    (unread plus pending), so total minus lag is what it has.
    """
    async with Admin(bus.url) as admin:
        lag = await admin.group_lag(group)
    return total - sum(p.lag for p in lag if p.topic == topic)


async def fill(bus: Bus, topic: str, n: int) -> None:
    await bus.create_topic(topic)
    async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
        await p.send_many([make_msg(i) for i in range(n)], flush=True)


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


Take = Callable[[Consumer[MLOpsMessage]], Awaitable[list[MLOpsMessage]]]


async def take_async_for(c: Consumer[MLOpsMessage]) -> list[MLOpsMessage]:
    return [await c.__anext__()]


async def take_get_messages(c: Consumer[MLOpsMessage]) -> list[MLOpsMessage]:
    return await c.get_messages(max_messages=10, timeout=1.0)


async def take_receive(c: Consumer[MLOpsMessage]) -> list[MLOpsMessage]:
    # receive()/ack() per message: the previous one is acknowledged when taken.
    msg, d = await c.receive()
    await c.ack(d)
    return [msg]


@pytest.mark.parametrize("take", [take_async_for, take_get_messages, take_receive],
                         ids=["async_for", "get_messages", "receive_ack"])
async def test_finished_messages_are_acknowledged_while_a_slow_one_is_worked_on(
    bus: Bus, take: Take
) -> None:
    topic, group = bus.topic(), bus.group()
    await fill(bus, topic, 300)
    done: list[MLOpsMessage] = []
    opts: dict[str, Any] = {**bus.consumer_options, "commit_interval": INTERVAL}
    async with Consumer(bus.url, topic=topic, group=group, auto_offset_reset="earliest",
                        **opts) as c:
        async with asyncio.timeout(60):
            while len(done) < 60:
                done += await take(c)
        # A slow message now: nothing is asked of the consumer meanwhile. What was
        # finished before it must reach the broker within about commit_interval.
        finished = len(done) - (0 if take is take_receive else 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INTERVAL * 4 + bus.quiet
        seen = 0
        while loop.time() < deadline:
            seen = await acknowledged(bus, group, topic, 300)
            if seen >= finished - 10:
                break
            await asyncio.sleep(INTERVAL / 2)
        # Nothing is acknowledged that was not finished, either.
        assert finished - 10 <= seen <= len(done), (seen, finished)


async def test_cancellation_storm_always_propagates_and_loses_nothing(bus: Bus) -> None:
    """Hundreds of calls cancelled at random points: CancelledError always comes out,
    nothing unfinished is acknowledged, nothing is lost, no task is left behind."""
    topic, group = bus.topic(), bus.group()
    n = 400
    await fill(bus, topic, n)
    rng = random.Random(7)
    processed: list[int] = []
    baseline = len(asyncio.all_tasks())
    c: Consumer[MLOpsMessage] = Consumer(
        bus.url, topic=topic, group=group, auto_offset_reset="earliest", prefetch=25,
        commit_interval=0.05, **bus.consumer_options,
    )
    async with c:
        for round_ in range(200):
            call = (c.get_messages(max_messages=rng.randint(1, 10), timeout=0.05)
                    if round_ % 2 else _one(c))
            task = asyncio.ensure_future(call)
            await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002, 0.01]))
            requested = task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                continue
            # A task that was asked to stop before it finished never returns normally.
            assert not requested, f"round {round_}: a cancelled call returned {got!r}"
            processed += ids(got)
        # Producers too: a cancelled send or flush raises CancelledError.
        async with Producer(bus.url, topic=bus.topic(), **bus.producer_options) as p:
            for round_ in range(100):
                call2 = p.send(make_msg(round_), flush=bool(round_ % 3 == 0))
                task2 = asyncio.ensure_future(call2)
                await asyncio.sleep(rng.choice([0, 0.0005, 0.002]))
                if task2.cancel():
                    with pytest.raises(asyncio.CancelledError):
                        await task2
                else:
                    await task2
    assert len(asyncio.all_tasks()) == baseline, asyncio.all_tasks()
    # Whatever the storm did not finish, the group delivers again: nothing lost.
    rest: list[int] = []
    async with Consumer(bus.url, topic=topic, group=group, auto_offset_reset="earliest",
                        **bus.consumer_options) as again:
        async with asyncio.timeout(60):
            while set(processed) | set(rest) != set(range(n)):
                rest += ids(await again.get_messages(timeout=0.5))
    assert set(processed) | set(rest) == set(range(n))


async def _one(c: Consumer[MLOpsMessage]) -> list[MLOpsMessage]:
    return [await c.__anext__()]
