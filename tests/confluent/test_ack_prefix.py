"""The kafka+confluent subscription's commits, driven through its interface with a
stand-in librdkafka consumer.

Real-broker behaviour is in the other files here; this pins down what is hard
to provoke there. The stand-in plays librdkafka's part: ``consume()`` runs the
rebalance callbacks the subscription registered (as librdkafka does), and
commits and seeks are recorded. The bookkeeping rules themselves are tested on
the ledger (tests/unit/kafka/test_ledger.py); these check that the
subscription applies them: acknowledgements in any order commit only the
acknowledged prefix, a revocation commits first and makes earlier copies
stale, a rewind (nack) drops copies fetched before it, and no acknowledgement
is lost to commit pacing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from mlops_async.backends.base import Delivery
from mlops_async.backends.kafka.confluent.consumer import ConfluentSubscription

T, P = "t", 0
Commit = dict[tuple[str, int], int]


@dataclass
class Msg:
    """What the subscription reads from a librdkafka message."""

    off: int
    part: int = P

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return T

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.off

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> None:
        return None

    def value(self) -> bytes:
        return b"v"

    def key(self) -> None:
        return None


@dataclass
class StubConsumer:
    """librdkafka's consumer as the subscription drives it, on the subscription's thread.

    ``consume()`` first runs the rebalance callbacks queued in ``rebalances``
    (``("on_revoke" or "on_assign", partitions of topic t)``), then hands out
    the next batch, or waits out its timeout when there is none, as librdkafka
    does. The group's first assignment (partition 0) is queued from the start.
    """

    commits: list[Commit] = field(default_factory=list)
    seeks: list[tuple[str, int, int]] = field(default_factory=list)
    batches: list[list[Msg]] = field(default_factory=list)
    rebalances: deque[tuple[str, list[int]]] = field(
        default_factory=lambda: deque([("on_assign", [P])]))
    callbacks: dict[str, Callable[..., None]] = field(default_factory=dict)

    def list_topics(self, topic: str | None, timeout: float) -> None:
        return None

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        while self.rebalances:  # queued from the loop: popleft() takes one whole
            callback, parts = self.rebalances.popleft()
            self.callbacks[callback](self, [TopicPartition(T, p) for p in parts])
        if self.batches:
            return self.batches.pop(0)
        time.sleep(timeout)  # on the subscription's thread, never the loop
        return []

    def close(self) -> None:
        return None

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Any]:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        return offsets

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


async def subscription(
    stub: StubConsumer | None = None,
) -> tuple[ConfluentSubscription, StubConsumer]:
    stub = stub or StubConsumer()
    sub = ConfluentSubscription(
        lambda conf: stub, {}, [T], "g", "earliest",  # type: ignore[arg-type,return-value]
        connect_timeout=1, commit_timeout=1, max_records=None, on_close=lambda s: None,
    )
    await sub.start()
    return sub, stub


async def fetch(sub: ConfluentSubscription, stub: StubConsumer, *msgs: int | Msg) -> list[Delivery]:
    """Hand ``msgs`` (offsets of partition 0, or messages) to the subscription's next fetch."""
    stub.batches.append([m if isinstance(m, Msg) else Msg(m) for m in msgs])
    got: list[Delivery] = []
    async with asyncio.timeout(5):
        while len(got) < len(msgs):
            got += await sub.fetch(100, 0.2)
    return got


async def until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not done():
            await asyncio.sleep(0.01)


async def committed(stub: StubConsumer, expected: Commit) -> None:
    """Wait until ``expected`` is the last commit (acks are committed in the background)."""
    await until(lambda: bool(stub.commits) and stub.commits[-1] == expected)


def only(stub: StubConsumer, *allowed: Commit) -> None:
    """Every commit so far was one of ``allowed``, never going back (paced commits
    merge, and a synchronous commit may send the last asynchronous one again)."""
    assert all(c in allowed for c in stub.commits), stub.commits
    ranks = [allowed.index(c) for c in stub.commits]
    assert ranks == sorted(ranks), stub.commits


async def test_acks_in_any_order_commit_only_the_acknowledged_prefix() -> None:
    sub, stub = await subscription()
    d = await fetch(sub, stub, 0, 1, 2, 3, 4)
    await sub.ack([d[1], d[3]])  # 0 still in progress: nothing is safe yet
    await sub.ack([d[2], d[0]])  # filtered ones first, then the kept one: 0..3 done
    await committed(stub, {(T, P): 4})
    await sub.ack([d[4]])
    await committed(stub, {(T, P): 5})
    await sub.ack([d[2]])  # an ack sent again (after a cancelled call) changes nothing
    await sub.close()
    only(stub, {(T, P): 4}, {(T, P): 5})


async def test_in_order_runs_of_two_partitions_and_a_run_with_a_hole() -> None:
    sub, stub = await subscription(StubConsumer(rebalances=deque([("on_assign", [P, 1])])))
    a = await fetch(sub, stub, 0, 1, 2, 3)
    b = await fetch(sub, stub, *(Msg(o, part=1) for o in (10, 12, 13)))  # a gap in the offsets
    await sub.ack(a[:2] + b)
    await committed(stub, {(T, P): 2, (T, 1): 14})
    await sub.ack([a[2], a[2]])  # the same one twice in a call: 3 is still outstanding
    await committed(stub, {(T, P): 3})
    await sub.ack([a[3]])
    await committed(stub, {(T, P): 4})
    c = await fetch(sub, stub, 4, 5, 6)
    await sub.ack([c[0], c[2]])  # a run with a hole: only its prefix counts
    await committed(stub, {(T, P): 5})
    await sub.ack([c[1]])
    await committed(stub, {(T, P): 7})
    await sub.close()


async def test_a_revocation_commits_first_and_makes_earlier_copies_stale() -> None:
    sub, stub = await subscription()
    before = await fetch(sub, stub, 0, 1)
    await sub.ack([before[0]])
    # Inside the next consume(): taken away, then given back.
    stub.rebalances.extend([("on_revoke", [P]), ("on_assign", [P])])
    after = await fetch(sub, stub, 1, 2)
    assert stub.commits[-1] == {(T, P): 1}, "what was acknowledged goes before the partition"
    assert sub.epoch == 1 and sub.revocations == 1
    assert not sub.owns(before[1]), "fetched before the revocation: the new owner reads it"
    assert all(sub.owns(d) for d in after)
    await sub.ack([before[1]])  # a stale ack is ignored, never committed
    await sub.ack(after)
    await committed(stub, {(T, P): 3})
    await sub.close()
    only(stub, {(T, P): 1}, {(T, P): 3})


async def test_a_rewind_drops_copies_fetched_before_it() -> None:
    sub, stub = await subscription()
    d = await fetch(sub, stub, 0, 1, 2, 3)
    await sub.ack([d[0]])
    await sub.nack([d[1], d[3]])  # read again from 1 (nack returns once the seek is done)
    assert stub.seeks == [(T, P, 1)] and sub.epoch == 1
    assert stub.commits[-1] == {(T, P): 1}, "a nack commits what was acknowledged before it"
    assert sub.owns(d[0]) and not any(sub.owns(x) for x in d[1:])
    await sub.ack([d[2], d[3]])  # copies from before the rewind: ignored
    again = await fetch(sub, stub, 1, 2, 3)
    await sub.ack(again)
    await committed(stub, {(T, P): 4})
    await sub.close()
    only(stub, {(T, P): 1}, {(T, P): 4})


async def test_a_batch_fetched_ahead_of_a_rewind_is_never_handed_out() -> None:
    sub, stub = await subscription()
    stub.batches = [[Msg(0), Msg(1), Msg(2), Msg(3)], [Msg(4), Msg(5)]]
    first = await sub.fetch(100, 0.2)  # and the next batch is fetched ahead
    await until(lambda: not stub.batches)
    await sub.nack([first[2]])  # read again from 2: the batch fetched ahead is stale
    stub.batches = [[Msg(2), Msg(3), Msg(4), Msg(5)]]
    later: list[Delivery] = []
    while len(later) < 4:
        later += await sub.fetch(100, 0.2)
    assert [d.offset for d in later] == [2, 3, 4, 5], "no stale copy of 4 or 5"
    assert all(sub.owns(d) for d in later)
    await sub.close()


async def test_acknowledged_then_closed_is_committed_even_if_the_caller_reuses_its_list() -> None:
    sub, stub = await subscription()
    d = await fetch(sub, stub, 0, 1, 2)
    finished = list(d)
    await sub.ack(finished)  # returns at once: committed asynchronously
    finished.clear()  # what the Consumer does with its list after ack()
    await sub.close()  # commits synchronously what is left
    assert stub.commits and stub.commits[-1] == {(T, P): 3}


async def test_acks_with_every_fetch_are_all_committed_by_close() -> None:
    sub, stub = await subscription()
    got = await fetch(sub, stub, 0, 1)
    for start in (2, 4, 6):  # fetch jobs fold each ack; commits within the interval wait
        stub.batches.append([Msg(start), Msg(start + 1)])
        acked, got = got, []
        while not got:
            got = await sub.ack_and_fetch(acked, 10, 0.2)
            acked = []
    await sub.ack(got)
    await sub.close()  # whatever pacing held back goes synchronously now
    assert stub.commits[-1] == {(T, P): 8}
    only(stub, *({(T, P): n} for n in range(2, 9, 2)))


@dataclass
class BusyStub(StubConsumer):
    """A busy stream: every consume() has the next two records at once."""

    next_offset: int = 0

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        super().consume(num_messages, 0)  # the assignment, and no wait
        self.next_offset += 2
        return [Msg(self.next_offset - 2), Msg(self.next_offset - 1)]


async def test_a_deferred_commit_reaches_the_broker_with_no_further_ack() -> None:
    sub, stub = await subscription()
    stub.batches = [[Msg(0), Msg(1)], [Msg(2), Msg(3)], [Msg(4)]]
    first = await sub.ack_and_fetch([], 10, 0.5)
    second = await sub.ack_and_fetch(first, 10, 0.5)  # acks 0, 1: committed at once
    await sub.ack_and_fetch(second, 10, 0.5)  # acks 2, 3 within the interval: deferred
    # The caller now works on offset 4 for a long time and acknowledges nothing: the
    # deferred commit still goes, with the fetch job running ahead or a job of its own.
    await committed(stub, {(T, P): 4})
    await sub.close()


async def test_a_commit_deferred_by_the_fetch_ahead_goes_while_the_caller_works() -> None:
    sub, stub = await subscription(BusyStub())
    got = await sub.ack_and_fetch([], 10, 0.5)  # 0, 1; the next two are fetched ahead
    for _ in range(2):  # a fast caller: the second fetch-ahead defers acks of 2, 3
        await asyncio.sleep(0.01)
        got = await sub.ack_and_fetch(got, 10, 0.5)
    # The caller now works on 4, 5 for long and calls nothing: no fetch job is running
    # (the one ahead returned at once), yet the deferred commit still goes.
    await committed(stub, {(T, P): 4})
    await sub.close()
