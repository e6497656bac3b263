"""Large-group features librdkafka brings: static membership and cooperative-sticky.

A static member (``group.instance.id``) that restarts within the session
timeout gets its partitions back without a group-wide rebalance: the other
member is never revoked. With ``partition.assignment.strategy=cooperative-sticky``
a member that joins takes partitions from the others without the others
giving up (and re-reading) the ones they keep.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from mlops_async.backends import Delivery, Subscription, create_backend
from mlops_async.backends.base import Backend

from ._helpers import make_topic, name, produce

pytestmark = pytest.mark.kafka

# Long enough for a restart to fit in (a join on Tansu takes half of it).
SESSION_MS = 6_000


async def member(
    url: str, topic: str, group: str, **options: Any
) -> tuple[Backend, Subscription]:
    be = create_backend(url, **{"heartbeat.interval.ms": 300, **options})
    await be.connect()
    sub = await be.subscribe([topic], group=group, auto_offset_reset="earliest")
    return be, sub


async def read_until(
    subs: list[Subscription], seen: list[dict[int, Delivery]], until: Callable[[], bool]
) -> None:
    """Fetch (never acknowledging) on every member until ``until()`` holds;
    ``seen[k]`` keeps the first delivery member k got from each partition."""
    async with asyncio.timeout(60):
        while not until():
            for sub, got in zip(subs, seen, strict=True):
                for d in await sub.fetch(500, 0.2):
                    got.setdefault(d.partition, d)


async def test_a_static_member_restarting_within_the_session_keeps_the_group_as_it_was(
    kafka_bootstrap: str,
) -> None:
    url = f"kafka+confluent://{kafka_bootstrap}"
    topic, group = await make_topic(url, 4), name("g")
    await produce(url, topic, 200)  # keyed: every partition has records
    # The eager protocol ("range"): any rebalance revokes every member, so the other
    # member's epoch shows whether one happened. The session is long enough for the
    # restart to fit in (a join on Tansu takes half of it).
    opts = {"session.timeout.ms": SESSION_MS, "partition.assignment.strategy": "range"}
    a_be, a = await member(url, topic, group, group_instance_id="member-a", **opts)
    b_be, b = await member(url, topic, group, **{"group.instance.id": "member-b"}, **opts)
    try:
        seen_a: dict[int, Delivery] = {}
        seen_b: dict[int, Delivery] = {}
        # Nothing is acknowledged, so each member reads its partitions from the start.
        await read_until([a, b], [seen_a, seen_b],
                         lambda: len(seen_a) + len(seen_b) == 4 and bool(seen_a and seen_b))
        assert not seen_a.keys() & seen_b.keys()
        b_epoch = b.epoch

        # A static member does not leave the group when it closes (no LeaveGroup): the
        # group only notices at the end of its session. A dynamic member's close makes
        # the broker rebalance at once, which B would see within a heartbeat or two.
        await a_be.close()
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + SESSION_MS / 1000 / 3
        while loop.time() < quiet_until:
            await b.fetch(500, 0.2)
        assert b.epoch == b_epoch, "closing a static member made the group rebalance"

        # Back within the session, same instance id: it gets its own partitions back.
        a_be, a = await member(url, topic, group, group_instance_id="member-a", **opts)
        again: dict[int, Delivery] = {}
        await read_until([a, b], [again, {}], lambda: again.keys() == seen_a.keys())
        for _ in range(10):  # a group-wide rebalance would reach B within these fetches
            await b.fetch(500, 0.2)
        if os.environ.get("KAFKA_BOOTSTRAP"):
            # Apache Kafka (KIP-345) hands the returning member its assignment as it
            # was: no rebalance, B was never revoked. Tansu 0.6 still rebalances the
            # group when a static member rejoins (it elects the rejoining member as a
            # new leader), so this part needs a broker that implements KIP-345.
            assert b.epoch == b_epoch, "the other member was never revoked"
            assert all(b.owns(d) for d in seen_b.values())
    finally:
        await a_be.close()
        await b_be.close()


async def test_cooperative_sticky_moves_only_the_partitions_a_new_member_takes(
    kafka_bootstrap: str,
) -> None:
    url = f"kafka+confluent://{kafka_bootstrap}"
    topic, group = await make_topic(url, 4), name("g")
    await produce(url, topic, 200)
    opts = {"session_timeout_ms": 3_000, "partition_assignment_strategy": "cooperative-sticky"}
    a_be, a = await member(url, topic, group, **opts)
    b_be: Backend | None = None
    try:
        held: dict[int, Delivery] = {}  # one unacknowledged record per partition, in A's hands
        await read_until([a], [held], lambda: len(held) == 4)
        b_be, b = await member(url, topic, group, **opts)
        taken: dict[int, Delivery] = {}
        await read_until([a, b], [{}, taken], lambda: len(taken) == 2)
        moved = set(taken)
        # The eager protocol would have revoked all four from A (and A would re-read
        # them all); cooperative-sticky takes just the two B now owns.
        assert {p for p, d in held.items() if not a.owns(d)} == moved
        assert all(a.owns(d) for p, d in held.items() if p not in moved)
    finally:
        await a_be.close()
        if b_be is not None:
            await b_be.close()
