"""The Kafka subscription's bookkeeping around rebalances, with a stand-in client.

Real-broker behaviour is in test_kafka.py; this pins down the ordering rules
that are hard to provoke there: commit only the acknowledged prefix, and drop
what was fetched before a partition was revoked but keep what came after it
was assigned again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from mlops_async.backends.kafka.aio import KafkaBackend, _KafkaSubscription

TP = TopicPartition("t", 0)


@dataclass
class Rec:
    offset: int
    value: bytes = b"v"
    key: bytes | None = None
    headers: tuple[Any, ...] = ()


@dataclass
class StubConsumer:
    batches: list[dict[TopicPartition, list[Rec]]] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Rec]]:
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    async def stop(self) -> None:
        return None


def sub_with(stub: StubConsumer) -> _KafkaSubscription:
    return _KafkaSubscription(KafkaBackend("h:9092"), stub, "g")  # type: ignore[arg-type]


async def committed(stub: StubConsumer, expected: dict[TopicPartition, int]) -> None:
    """Commits go in the background: wait until ``expected`` is the last one."""
    async with asyncio.timeout(5):
        while not stub.commits or stub.commits[-1] != expected:
            await asyncio.sleep(0.005)


def committing() -> list[asyncio.Task[object]]:
    """The background commit tasks still running."""
    return [t for t in asyncio.all_tasks()
            if t.get_name() == "mlops_async.kafka.commit" and not t.done()]


async def test_commits_only_the_acknowledged_prefix() -> None:
    stub = StubConsumer([{TP: [Rec(0), Rec(1), Rec(2), Rec(3)]}])
    sub = sub_with(stub)
    d = await sub.fetch(10, 0.1)
    await sub.ack([d[0], d[2]])  # 1 still in progress: only offset 0 is safe
    await committed(stub, {TP: 1})
    assert stub.commits == [{TP: 1}]
    await sub.ack([d[1]])  # now 0..2 are done
    await committed(stub, {TP: 3})
    assert stub.commits == [{TP: 1}, {TP: 3}]


async def test_acks_while_a_commit_is_in_flight_are_merged_and_flushed_at_close() -> None:
    stub = StubConsumer([{TP: [Rec(i) for i in range(6)]}])
    sub = sub_with(stub)
    d = await sub.fetch(10, 0.1)
    await sub.ack(d[:2])  # a commit starts in the background
    await sub.ack(d[2:4])
    await sub.ack(d[4:5])  # both merged into one pending commit of the highest offset
    await committed(stub, {TP: 5})
    assert len(stub.commits) <= 2
    await sub.ack(d[5:])
    await sub.close()  # the last acknowledgement is committed before close returns
    assert stub.commits[-1] == {TP: 6}
    assert not committing()


async def test_a_failed_background_commit_is_sent_again() -> None:
    stub = StubConsumer([{TP: [Rec(0), Rec(1)]}])
    sub = sub_with(stub)
    fail = [True]
    commit = stub.commit

    async def flaky(offsets: dict[TopicPartition, Any]) -> None:
        if fail.pop() if fail else False:
            raise ConnectionError("broker went away")
        await commit(offsets)

    stub.commit = flaky  # type: ignore[method-assign]
    d = await sub.fetch(10, 0.1)
    await sub.ack(d[:1])
    async with asyncio.timeout(5):
        while fail:  # the commit is tried, and fails
            await asyncio.sleep(0.005)
    assert stub.commits == []  # failed: kept pending, not forgotten
    await sub.ack(d[1:])
    await committed(stub, {TP: 2})
    assert stub.commits == [{TP: 2}]


async def test_revoked_then_reassigned_partition() -> None:
    stub = StubConsumer([{TP: [Rec(0), Rec(1)]}])
    sub = sub_with(stub)
    before = await sub.fetch(10, 0.1)
    await sub.ack([before[0]])
    await sub.revoked({TP})  # someone else owns it now: committed before revocation
    assert stub.commits == [{TP: 1}]
    assert not sub.owns(before[1]), "fetched before the revocation: stale"
    stub.batches.append({TP: [Rec(1), Rec(2)]})  # it came back; reading resumes at 1
    after = await sub.fetch(10, 0.1)
    assert all(sub.owns(d) for d in after), "fetched after it came back: current"
    await sub.ack([before[1]])  # a stale ack is ignored, never committed
    await sub.ack(after)
    await committed(stub, {TP: 3})
    assert stub.commits == [{TP: 1}, {TP: 3}]


async def test_acks_within_the_commit_interval_merge_into_one_commit() -> None:
    stub = StubConsumer([{TP: [Rec(i) for i in range(4)]}])
    sub = sub_with(stub)
    d = await sub.fetch(10, 0.1)
    await sub.ack(d[:1])
    await asyncio.sleep(0)  # the committer sends the first at once
    for x in d[1:]:  # then waits out the interval while these come in
        await sub.ack([x])
    await committed(stub, {TP: 4})
    assert stub.commits == [{TP: 1}, {TP: 4}]
    await sub.close()


async def acks_pending_between_commits() -> tuple[StubConsumer, _KafkaSubscription,
                                                   TopicPartition]:
    """Two partitions: offset 0 of each committed, offset 1 of each acknowledged while
    the committer waits out its interval (pending for both)."""
    tp1 = TopicPartition("t", 1)
    stub = StubConsumer([{TP: [Rec(0), Rec(1)], tp1: [Rec(0), Rec(1)]}])
    sub = sub_with(stub)
    d = await sub.fetch(10, 0.1)
    await sub.ack([d[0], d[2]])
    await asyncio.sleep(0)  # sent: the committer now waits out its interval
    await sub.ack([d[1], d[3]])
    return stub, sub, tp1


async def test_a_revocation_between_commits_flushes_without_losing_other_partitions() -> None:
    stub, sub, tp1 = await acks_pending_between_commits()
    await sub.revoked({TP})  # TP's acks are committed before it goes, at once
    assert stub.commits[-1] == {TP: 2}
    await committed(stub, {tp1: 2})  # not dropped with the stopped committer
    await sub.close()


async def test_a_cancelled_revocation_flush_leaves_no_acknowledgement_behind() -> None:
    stub, sub, tp1 = await acks_pending_between_commits()
    flush = asyncio.create_task(sub.revoked({TP}))
    await asyncio.sleep(0)  # the flush is stopping the waiting committer...
    flush.cancel()  # ...and is cancelled there (a shutdown during a rebalance)
    await asyncio.gather(flush, return_exceptions=True)
    async with asyncio.timeout(5):  # tp1's acknowledgement still goes
        while {tp1: 2} not in stub.commits:
            await asyncio.sleep(0.01)
    await sub.close()
