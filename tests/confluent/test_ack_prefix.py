"""The kafka+confluent subscription's offset bookkeeping, with a stand-in librdkafka consumer.

Real-broker behaviour is in the other files here; this pins down the rules
that are hard to provoke there, on the thread-side methods called directly:
acknowledgements in any order commit only the acknowledged prefix, a
revocation makes earlier copies stale, and a rewind (nack) drops copies
fetched before it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mlops_async.backends.base import Delivery
from mlops_async.backends.kafka.confluent.consumer import ConfluentSubscription

T, P = "t", 0


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
    commits: list[dict[tuple[str, int], int]] = field(default_factory=list)
    seeks: list[tuple[str, int, int]] = field(default_factory=list)
    batches: list[list[Msg]] = field(default_factory=list)

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

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
    sub._assigned.add((T, P))  # as if the group had assigned it
    return sub, stub


def fetch(sub: ConfluentSubscription, *offsets: int) -> list[Delivery]:
    return sub._deliveries([Msg(o) for o in offsets])  # type: ignore[arg-type]


def ack(sub: ConfluentSubscription, deliveries: list[Delivery]) -> None:
    sub._apply(deliveries)
    sub._commit()


async def test_acks_in_any_order_commit_only_the_acknowledged_prefix() -> None:
    sub, stub = await subscription()
    d = fetch(sub, 0, 1, 2, 3, 4)
    ack(sub, [d[1], d[3]])  # 0 still in progress: nothing is safe yet
    assert stub.commits == []
    ack(sub, [d[2], d[0]])  # filtered ones first, then the kept one: 0..3 done
    ack(sub, [d[4]])
    assert stub.commits == [{(T, P): 4}, {(T, P): 5}]
    ack(sub, [d[2]])  # an ack sent again (after a cancelled call) changes nothing
    assert stub.commits == [{(T, P): 4}, {(T, P): 5}]


async def test_in_order_runs_leave_at_once_and_a_repeated_ack_never_skips_a_record() -> None:
    sub, stub = await subscription()
    sub._assigned.add((T, 1))
    a = fetch(sub, 0, 1, 2, 3)
    b = sub._deliveries([Msg(o, part=1) for o in (10, 12, 13)])  # type: ignore[arg-type]
    ack(sub, a[:2] + b)  # in order in each partition (a gap in partition 1's offsets)
    assert stub.commits == [{(T, P): 2, (T, 1): 14}]
    ack(sub, [a[2], a[2]])  # the same one twice in a call: 3 is still outstanding
    assert stub.commits[-1] == {(T, P): 3}
    ack(sub, [a[3]])
    assert stub.commits[-1] == {(T, P): 4}
    c = fetch(sub, 4, 5, 6)
    ack(sub, [c[0], c[2]])  # a run with a hole: only its prefix counts
    assert stub.commits[-1] == {(T, P): 5}
    ack(sub, [c[1]])
    assert stub.commits[-1] == {(T, P): 7}


async def test_a_revocation_makes_earlier_copies_stale() -> None:
    sub, stub = await subscription()
    before = fetch(sub, 0, 1)
    ack(sub, [before[0]])
    sub._forget({(T, P)})  # what the revoke callback does after its commit
    assert sub.epoch == 1 and sub.revocations == 1
    assert not sub.owns(before[1]), "fetched before the revocation: the new owner reads it"
    sub._assigned.add((T, P))  # it came back; reading resumes at the commit
    after = fetch(sub, 1, 2)
    assert all(sub.owns(d) for d in after)
    ack(sub, [before[1]])  # a stale ack is ignored, never committed
    ack(sub, after)
    assert stub.commits == [{(T, P): 1}, {(T, P): 3}]


async def test_a_rewind_drops_copies_fetched_before_it() -> None:
    sub, stub = await subscription()
    d = fetch(sub, 0, 1, 2, 3)
    ack(sub, [d[0]])
    sub._rewind({(T, P): 1})  # nack(d[1]): read again from 1
    assert stub.seeks == [(T, P, 1)] and sub.epoch == 1
    assert sub.owns(d[0]) and not any(sub.owns(x) for x in d[1:])
    ack(sub, [d[2], d[3]])  # copies from before the rewind: ignored
    again = fetch(sub, 1, 2, 3)
    ack(sub, again)
    assert stub.commits == [{(T, P): 1}, {(T, P): 4}]


async def test_a_batch_fetched_ahead_of_a_rewind_is_never_handed_out() -> None:
    sub, stub = await subscription()
    stub.batches = [[Msg(0), Msg(1), Msg(2), Msg(3)], [Msg(4), Msg(5)]]
    first = await sub.fetch(100, 0.2)  # and the next batch is fetched ahead
    while stub.batches:
        await asyncio.sleep(0.01)
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
    d = fetch(sub, 0, 1, 2)
    finished = list(d)
    await sub.ack(finished)  # returns at once: committed asynchronously
    finished.clear()  # what the Consumer does with its list after ack()
    await sub.close()  # commits synchronously what is left
    assert stub.commits and stub.commits[-1] == {(T, P): 3}


async def test_fetch_jobs_defer_commits_within_the_interval_and_none_is_lost() -> None:
    sub, stub = await subscription()
    d = fetch(sub, 0, 1, 2, 3)
    sub._inbox.append(("ack", d[:2], None))
    sub._serve_inbox(asynchronous=True, throttle=True)  # the first commit goes at once
    assert stub.commits == [{(T, P): 2}]
    sub._inbox.append(("ack", d[2:], None))
    sub._serve_inbox(asynchronous=True, throttle=True)  # within the interval: deferred
    assert stub.commits == [{(T, P): 2}] and sub._deferred
    sub._serve_inbox(asynchronous=True)  # a commit job of its own (_serve_soon) is not held
    assert stub.commits[-1] == {(T, P): 4} and not sub._deferred
    sub._inbox.append(("ack", fetch(sub, 4), None))
    sub._serve_inbox(asynchronous=True, throttle=True)
    await sub.close()  # a deferred commit goes synchronously at close
    assert stub.commits[-1] == {(T, P): 5}


@dataclass
class WaitingStub(StubConsumer):
    """consume() waits out its timeout when it has nothing, as librdkafka does."""

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        if self.batches:
            return self.batches.pop(0)
        time.sleep(timeout)  # on the subscription's thread, never the loop
        return []


async def test_a_deferred_commit_reaches_the_broker_with_no_further_ack() -> None:
    sub, stub = await subscription(WaitingStub())
    stub.batches = [[Msg(0), Msg(1)], [Msg(2), Msg(3)], [Msg(4)]]
    first = await sub.ack_and_fetch([], 10, 0.5)
    second = await sub.ack_and_fetch(first, 10, 0.5)  # acks 0, 1: committed at once
    await sub.ack_and_fetch(second, 10, 0.5)  # acks 2, 3 within the interval: deferred
    # The caller now works on offset 4 for a long time and acknowledges nothing: the
    # deferred commit still goes, with the fetch job running ahead or a job of its own.
    async with asyncio.timeout(5):
        while not stub.commits or stub.commits[-1] != {(T, P): 4}:
            await asyncio.sleep(0.01)
    await sub.close()


@dataclass
class BusyStub(StubConsumer):
    """A busy stream: every consume() has the next two records at once."""

    next_offset: int = 0

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        self.next_offset += 2
        return [Msg(self.next_offset - 2), Msg(self.next_offset - 1)]


async def test_a_commit_deferred_by_the_fetch_ahead_goes_while_the_caller_works() -> None:
    sub, stub = await subscription(BusyStub())
    got = await sub.ack_and_fetch([], 10, 0.5)  # 0, 1; the next two are fetched ahead
    for _ in range(2):  # a fast caller: the second fetch-ahead defers acks of 2, 3
        await asyncio.sleep(0.01)
        got = await sub.ack_and_fetch(got, 10, 0.5)
    # The caller now works on 4, 5 for long and calls nothing: no fetch job is running
    # (the one ahead returned at once), yet the deferred commit still goes.
    async with asyncio.timeout(5):
        while not stub.commits or stub.commits[-1] != {(T, P): 4}:
            await asyncio.sleep(0.01)
    await sub.close()
