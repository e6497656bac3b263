"""The memory bus when a topic is deleted and re-created: no state of the old topic
(a group's cursor, messages in hand, messages waiting for redelivery) may reach the
new one, and an offset that is gone from the log is skipped, never indexed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mlops_async import Admin, Consumer, MLOpsMessage, Producer
from mlops_async.backends import Delivery, Record, memory
from mlops_async.backends.memory import MemoryBackend, MemoryBroker

from ...conftest import make_msg


def bus() -> str:
    return f"memory://recreate-{uuid.uuid4().hex[:8]}"


async def publish(url: str, ids: range) -> None:
    async with Producer(url, topic="t") as p:
        await p.send_many([make_msg(i) for i in ids], flush=True)


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


async def drain(c: Consumer[MLOpsMessage]) -> list[int]:
    got: list[int] = []
    while batch := await c.get_messages(timeout=0.2):
        got += ids(batch)
    return got


async def test_messages_left_in_hand_do_not_reach_a_recreated_topic() -> None:
    # A member leaves with three old messages in hand (they go to the group's
    # redelivery queue), the topic is deleted and re-created with two messages.
    # Offsets 0..2 of the old topic used to be handed out from the new log:
    # offset 2 is past its end (IndexError out of fetch).
    url = bus()
    await publish(url, range(3))
    c = Consumer(url, topic="t", group="g", auto_offset_reset="earliest", commit="manual")
    await c.start()
    assert ids([m for m, _ in await c.receive_many(3, 0)]) == [0, 1, 2]
    await c.close(processed=False)
    async with Admin(url) as admin:
        await admin.delete_topic("t")
    await publish(url, range(100, 102))
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c:
        assert await drain(c) == [100, 101]


async def test_nacked_messages_do_not_come_back_as_records_of_a_recreated_topic() -> None:
    # A live member nacks two old messages, the topic is re-created with three: the
    # old offsets 0 and 1 used to hand out the new records 100 and 101 a first time,
    # then the fresh cursor handed them out again (a different record under an old
    # offset, and a duplicate).
    url = bus()
    await publish(url, range(2))
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest",
                        commit="manual") as c:
        got = await c.receive_many(2, 0)
        assert ids([m for m, _ in got]) == [0, 1]
        await c.nack(*(d for _, d in got))
        async with Admin(url) as admin:
            await admin.delete_topic("t")
        await publish(url, range(100, 103))
        got = await c.receive_many(10, 0.1)
        assert ids([m for m, _ in got]) == [100, 101, 102]
        assert [d.offset for _, d in got] == [2, 3, 4]  # numbered on from the old end
        await c.ack(*(d for _, d in got))
        await c.commit()
        assert await c.get_messages(timeout=0.2) == []  # nothing else, no duplicate


async def test_delete_topic_drops_every_groups_state_for_it() -> None:
    url = bus()
    await publish(url, range(4))
    c = Consumer(url, topic="t", group="g", auto_offset_reset="earliest", commit="manual",
                 prefetch=2)
    await c.start()
    await c.receive_many(2, 0)
    await c.close(processed=False)
    async with Admin(url) as admin:
        assert [lag.pending for lag in await admin.group_lag("g")] == [2]
        await admin.delete_topic("t")
        assert await admin.group_lag("g") == []  # no cursor, nothing pending or queued
        g = MemoryBroker.get(url.split("://")[1]).groups["g"]
        assert not g.redeliver and not g.pending and not g.cursors


async def test_a_redelivery_offset_outside_the_log_is_skipped_not_indexed() -> None:
    # Defence in depth under the delete-topic cleanup: an offset queued for
    # redelivery that the log no longer holds (trimmed by retention, or from a
    # topic deleted since) is gone from the broker, as a record past retention is
    # in Kafka: take() skips it and hands out the rest.
    broker = MemoryBroker(f"recreate-{uuid.uuid4().hex[:8]}", retention=3)
    await broker.append([Record("t", str(i).encode()) for i in range(3)])
    g, member = broker.join("g", ["t"], "earliest")
    taken = broker.take(g, member, ["t"], 3)
    broker.nack(g, member, taken)
    g.redeliver.append(("t", 7))  # past the end of the log
    out = broker.take(g, member, ["t"], 10)
    assert [d.value for d in out] == [b"0", b"1", b"2"]
    assert not g.redeliver
    broker.ack(g, out)

    # Trimmed while queued: a member-less group does not hold retention back.
    other, m2 = broker.join("other", ["t"], "earliest")
    got = broker.take(other, m2, ["t"], 1)
    broker.nack(other, m2, got)
    broker.leave(other, m2)  # offset 0 waits in other's redelivery queue
    await broker.append([Record("t", b"3")])  # retention 3: offset 0 is trimmed
    other, m2 = broker.join("other", ["t"], "earliest")
    assert [d.offset for d in broker.take(other, m2, ["t"], 10)] == [1, 2, 3]


async def test_a_publisher_waiting_for_room_publishes_into_the_recreated_topic() -> None:
    # Waiting for room in a full topic that is deleted meanwhile, a publish used to
    # append to the deleted (detached) log: the records were lost, or the publisher
    # waited on a log nobody would ever free again.
    backend = MemoryBackend(f"recreate-{uuid.uuid4().hex[:8]}", retention=2)
    await backend.connect()
    broker = backend.bus
    assert broker is not None
    await broker.append([Record("t", b"a"), Record("t", b"b")])
    g, member = broker.join("g", ["t"], "earliest")  # live, has acknowledged nothing
    publish = asyncio.create_task(broker.append([Record("t", b"c")]))
    await asyncio.sleep(0)
    assert not publish.done()  # flow control: waits for g
    await backend.delete_topic("t")
    await asyncio.wait_for(publish, 1)
    assert [d.value for d in broker.take(g, member, ["t"], 10)] == [b"c"]


async def old_in_hand_then_recreated(
    url: str, c: Consumer[MLOpsMessage]
) -> tuple[list[Delivery], list[Delivery]]:
    """``c`` receives messages 0-2 of topic "t", which is then deleted and re-created
    with 100-102, which ``c`` receives too; returns both deliveries, still in hand."""
    old = await c.receive_many(3, 0)
    assert ids([m for m, _ in old]) == [0, 1, 2]
    async with Admin(url) as admin:
        await admin.delete_topic("t")
    await publish(url, range(100, 103))
    new = await c.receive_many(10, 0.1)
    assert ids([m for m, _ in new]) == [100, 101, 102]
    return [d for _, d in old], [d for _, d in new]


async def test_a_late_ack_of_a_deleted_topics_delivery_leaves_the_new_record_pending() -> None:
    # A member still holds deliveries of the deleted topic when it takes records of
    # the re-created one. A delivery names only topic and offset: with the new log
    # numbered from 0 again, acking an old delivery cleared the new record at that
    # offset from pending, and leaving without processing it lost it.
    url = bus()
    await publish(url, range(3))
    c = Consumer(url, topic="t", group="g", auto_offset_reset="earliest", commit="manual")
    await c.start()
    old, _ = await old_in_hand_then_recreated(url, c)
    await c.ack(*old)
    await c.close(processed=False)  # sends that ack; the new records go back unprocessed
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c2:
        assert await drain(c2) == [100, 101, 102]


async def test_a_late_nack_of_a_deleted_topics_delivery_does_not_requeue_a_new_record() -> (
    None
):
    # As above with a nack: it put the new records at those offsets back in the
    # group's queue while the member still had them in hand, and another member got
    # them a second time.
    url = bus()
    await publish(url, range(3))
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest",
                        commit="manual") as c:
        old, new = await old_in_hand_then_recreated(url, c)
        await c.nack(*old)
        async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c2:
            assert await drain(c2) == []  # c has them in hand: no duplicate
        await c.ack(*new)
        await c.commit()
        assert await c.get_messages(timeout=0.2) == []
        async with Admin(url) as admin:
            assert [(lag.lag, lag.pending) for lag in await admin.group_lag("g")] == [(0, 0)]


async def test_a_recreated_topic_numbers_on_from_where_the_deleted_one_ended() -> None:
    # A new group reading the re-created topic from "earliest" starts at its base,
    # and lag and message counts are about the new log only.
    url = bus()
    await publish(url, range(3))
    async with Admin(url) as admin:
        await admin.delete_topic("t")
        await publish(url, range(100, 102))
        assert [(t.name, t.messages) for t in await admin.list_topics()] == [("t", 2)]
        async with Consumer(url, topic="t", group="new", auto_offset_reset="earliest",
                            commit="manual") as c:
            got = await c.receive_many(10, 0.1)
            assert ids([m for m, _ in got]) == [100, 101]
            assert [d.offset for _, d in got] == [3, 4]
            lags = await admin.group_lag("new")
            assert [(lag.committed, lag.end_offset, lag.lag, lag.pending) for lag in lags] == [
                (3, 5, 2, 2)
            ]
            await c.commit()
            lags = await admin.group_lag("new")
            assert [(lag.committed, lag.end_offset, lag.lag, lag.pending) for lag in lags] == [
                (5, 5, 0, 0)
            ]


async def test_retention_trims_a_recreated_topic_from_its_base() -> None:
    broker = MemoryBroker(f"recreate-{uuid.uuid4().hex[:8]}", retention=3)
    await broker.append([Record("t", b"%d" % i) for i in range(5)])  # offsets 2..4 kept
    broker.delete_topic("t")
    await broker.append([Record("t", b"%d" % i) for i in range(5, 9)])  # 5..8, 5 trimmed
    t = broker.topics["t"]
    assert (t.base, t.end) == (6, 9)
    g, member = broker.join("g", ["t"], "earliest")
    out = broker.take(g, member, ["t"], 10)
    assert [(d.offset, d.value) for d in out] == [(6, b"6"), (7, b"7"), (8, b"8")]


async def test_the_ends_of_deleted_topics_are_remembered_for_a_bounded_number_of_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "_REMEMBERED_ENDS", 2)
    broker = MemoryBroker(f"recreate-{uuid.uuid4().hex[:8]}")
    for name in ("a", "b", "c"):
        await broker.append([Record(name, b"x")])
        broker.delete_topic(name)
    assert broker._ended == {"b": 1, "c": 1}  # the oldest, "a", forgotten
    assert broker.topic("a").base == 0
    assert broker.topic("b").base == 1
    assert broker._ended == {"c": 1}  # a live topic carries its own end
