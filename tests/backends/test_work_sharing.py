"""Slow work is shared: the members of a group each do their share, on every broker
that shares message by message (memory, Redis, PostgreSQL).

Each consumer holds about ``prefetch_window`` seconds of its caller's work, so a
slow handler's members take a message or two at a time; a member that read far
ahead while its stream was fast hands back what it cannot start once it slows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import pytest

from mlops_async import Consumer, MLOpsMessage, Producer
from mlops_async.backends import Delivery, Subscription
from mlops_async.backends.base import OffsetReset
from mlops_async.backends.memory import MemoryBackend

from ..conftest import make_msg
from .conftest import Bus

SLOW = 0.5  # seconds per slow message: at the default window, one message ahead


@pytest.fixture(params=["memory", "redis", "postgres"])
async def share_bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield Bus("memory", f"memory://sharing-{request.node.name[-20:]}")
    else:
        yield request.getfixturevalue(f"{request.param}_bus")


async def run_members(bus: Bus, members: int, n: int, slow_from: int = 0,
                      fast: int = 0, **options: Any) -> list[list[int]]:
    """``members`` consumers of one group handle ``fast`` quick messages, then ``n``
    slow ones, all sent once every member has joined; returns what each handled."""
    topic, group = bus.topic(), bus.group()
    await bus.create_topic(topic)
    handled: list[list[int]] = [[] for _ in range(members)]
    total = fast + n
    done = asyncio.Event()

    async def member(i: int, c: Consumer[MLOpsMessage]) -> None:
        async for msg in c:
            k = msg.additional_arguments["i"]
            handled[i].append(k)
            if k >= fast:
                await asyncio.sleep(SLOW)
            if sum(map(len, handled)) >= total:
                done.set()

    async with AsyncExitStack() as stack:
        consumers = [
            await stack.enter_async_context(Consumer(
                bus.url, topic=topic, group=group, auto_offset_reset="earliest",
                **{**bus.consumer_options, **options}))
            for _ in range(members)
        ]
        tasks = [asyncio.create_task(member(i, c)) for i, c in enumerate(consumers)]
        try:
            await asyncio.sleep(0.3)  # every member waits in its first fetch
            async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
                await p.send_many([make_msg(i) for i in range(total)], flush=True)
            async with asyncio.timeout(90):
                await done.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(k for h in handled for k in h) == list(range(total)), "each once"
    return [[k for k in h if k >= fast] for h in handled]


@pytest.mark.parametrize("members", [2, 4])
async def test_slow_members_each_handle_their_share(share_bus: Bus, members: int) -> None:
    n = 4 * members
    handled = await run_members(share_bus, members, n)
    counts = [len(h) for h in handled]
    assert all(abs(c - n / members) <= 1 for c in counts), counts


async def test_a_member_that_read_ahead_while_fast_hands_back_when_slow(share_bus: Bus) -> None:
    # The fast part opens the windows wide: whoever fetches next takes every slow
    # message too, then hands back what it cannot start once its handler slows.
    n = 12
    handled = await run_members(share_bus, 2, n, fast=300)
    counts = [len(h) for h in handled]
    assert all(c >= n // 4 for c in counts), counts


async def test_a_lone_member_that_hands_back_still_reads_in_order(share_bus: Bus) -> None:
    # What it hands back, it takes again before anything newer (nobody else wants it).
    (handled,) = await run_members(share_bus, 1, 6, fast=300)
    assert handled == list(range(300, 306))


# -- what the backend is asked for (the memory bus, recording its fetches) ----------


class _Recording(MemoryBackend):
    """The memory bus, noting each fetch's size and the read-ahead it was allowed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.fetches: list[tuple[int, int | None]] = []

    async def subscribe(self, topics: Sequence[str], *, group: str | None,
                        auto_offset_reset: OffsetReset) -> Subscription:
        return _RecordingSub(
            await super().subscribe(topics, group=group, auto_offset_reset=auto_offset_reset),
            self.fetches)


class _RecordingSub(Subscription):
    def __init__(self, sub: Subscription, fetches: list[tuple[int, int | None]]) -> None:
        self._sub, self._fetches = sub, fetches
        self.cheap_ack = sub.cheap_ack

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        self._fetches.append((max_records, self.read_ahead))
        return await self._sub.fetch(max_records, timeout)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._sub.ack(deliveries)

    async def close(self) -> None:
        await self._sub.close()


async def fill(url: str, topic: str, n: int) -> None:
    async with Producer(url, topic=topic) as p:
        await p.send_many([make_msg(i) for i in range(n)], flush=True)


async def test_a_fast_stream_fetches_full_batches_and_reads_ahead_as_much() -> None:
    backend = _Recording("full-batches")
    await fill("memory://full-batches", "t", 5_000)
    got = 0
    async with Consumer(backend=backend, topic="t", group="g", prefetch=500,
                        auto_offset_reset="earliest") as c:
        async for _ in c:
            got += 1
            if got == 5_000:
                break
    # The first fetch knows nothing of the caller yet; from the second on, full ones.
    assert backend.fetches[0][0] == 2
    assert set(backend.fetches[1:]) == {(500, 500)}, backend.fetches


async def test_a_consumer_without_a_group_fetches_full_batches_whatever_its_pace() -> None:
    backend = _Recording("alone")
    await fill("memory://alone", "t", 8)
    async with Consumer(backend=backend, topic="t", prefetch=500,
                        auto_offset_reset="earliest") as c:
        async for msg in c:
            await asyncio.sleep(0.05)  # slow, but nobody else could take its messages
            if msg.additional_arguments["i"] == 7:
                break
    assert {size for size, _ in backend.fetches} == {500}, backend.fetches


async def test_a_slow_caller_holds_one_message_ahead_and_nothing_read_ahead() -> None:
    backend = _Recording("one-ahead")
    await fill("memory://one-ahead", "t", 8)
    got = 0
    async with Consumer(backend=backend, topic="t", group="g", prefetch_window=0.2,
                        auto_offset_reset="earliest") as c:
        async for _ in c:
            got += 1
            await asyncio.sleep(0.2)
            if got == 8:
                break
    assert set(backend.fetches) == {(2, 0)}, backend.fetches


async def test_batches_hold_one_batch_ahead_of_a_slow_caller() -> None:
    backend = _Recording("batch-ahead")
    await fill("memory://batch-ahead", "t", 40)
    got = 0
    async with Consumer(backend=backend, topic="t", group="g", prefetch_window=0.2,
                        auto_offset_reset="earliest") as c:
        async for batch in c.batches(max_messages=5, max_wait=0.01):
            got += len(batch)
            await asyncio.sleep(0.2)
            if got == 40:
                break
    assert {size for size, _ in backend.fetches} == {10}, backend.fetches



async def test_a_poll_takes_what_is_there_unless_it_says_how_many_it_wants() -> None:
    drain, slow = _Recording("polls"), _Recording("polls")
    await fill("memory://polls", "t", 20)
    async with Consumer(backend=drain, topic="t", group="drain", prefetch=500,
                        auto_offset_reset="earliest") as c:
        assert len(await c.get_messages(timeout=1)) == 20  # one poll: what is there
    async with Consumer(backend=slow, topic="t", group="slow", prefetch=500,
                        prefetch_window=0.2, auto_offset_reset="earliest") as c:
        got = 0
        while got < 8:  # a slow poller asking for one at a time holds one more
            got += len(await c.get_messages(max_messages=1, timeout=1))
            await asyncio.sleep(0.2)
    assert [size for size, _ in drain.fetches] == [500]
    assert {size for size, _ in slow.fetches} == {2}, slow.fetches
