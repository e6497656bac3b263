"""The producer's parts through their own interfaces: the buffer's one capacity rule and
cut, and the ledger's numbering, settling, refusals and holes."""

from __future__ import annotations

import asyncio

import pytest

from mlops_async import PublishError
from mlops_async.backends import Record
from mlops_async.outbox import RecordBuffer, SequenceLedger


def records(*sizes: int) -> list[Record]:
    return [Record("t", b"x" * s) for s in sizes]


def test_an_empty_buffer_takes_anything_and_a_full_one_nothing_more() -> None:
    buf = RecordBuffer(max_count=3, max_bytes=100)
    assert not buf.full_for(1, 10_000)  # empty: an oversize record still goes, alone
    buf.admit(records(10, 10), 20)
    assert not buf.full_for(1, 80)
    assert buf.full_for(1, 81)  # bytes
    assert buf.full_for(2, 1)  # count
    buf.settled(2, 20)
    assert buf.count == buf.bytes == 0


def test_cut_takes_whole_buffers_without_a_pass_and_splits_by_bytes() -> None:
    buf = RecordBuffer(max_count=100, max_bytes=10_000)
    buf.admit(records(*[10] * 10), 100)
    batch, size = buf.cut(batch_size=4, batch_bytes=1000, in_flight_bytes=0)
    assert len(batch) == 4 and size == 40
    batch, size = buf.cut(batch_size=100, batch_bytes=1000, in_flight_bytes=40)
    assert len(batch) == 6 and size == 60 and buf.records == []
    big = RecordBuffer(max_count=100, max_bytes=10_000)
    big.admit(records(*[100] * 10), 1000)
    batch, _ = big.cut(batch_size=100, batch_bytes=300, in_flight_bytes=0)
    assert len(batch) == 3  # about batch_bytes, by the average record size


async def test_waiting_for_room_ends_at_a_settlement_or_the_deadline() -> None:
    buf = RecordBuffer(max_count=1, max_bytes=100)
    buf.admit(records(10), 10)
    waiter = asyncio.ensure_future(buf.wait_for_room(None))
    await asyncio.sleep(0)
    buf.settled(1, 10)
    await asyncio.wait_for(waiter, 1)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await buf.wait_for_room(loop.time() + 0.01)


async def test_the_ledger_settles_in_order_and_reports_refusals_by_range() -> None:
    ledger = SequenceLedger()
    assert ledger.take(3) == 1 and ledger.take(2) == 4
    seen: list[int] = []
    ledger.add_listener(seen.append)
    first_three = ledger.confirmed(1, 3)
    last_two = ledger.confirmed(4, 5)
    ledger.settle(3)
    await first_three
    assert not last_two.done()
    ledger.refuse(2, RuntimeError("denied"))
    ledger.settle(2)
    with pytest.raises(PublishError, match="2 record"):
        await last_two
    assert seen == [3, 5] and ledger.failed == 2
    assert ledger.refused(1, 3) is None


async def test_holes_are_refused_when_delivery_reaches_them() -> None:
    ledger = SequenceLedger()
    ledger.take(5)
    ledger.add_hole(3, 3, OSError("disk full"))  # record 3 never reached the spool
    ledger.settle_rows(4)  # rows 1, 2, 4, 5 delivered from the spool
    assert ledger.settled == 5 and ledger.failed == 1
    err = ledger.refused(1, 5)
    assert err is not None and "1 record" in str(err)


async def test_waiters_fail_together_and_a_cancelled_wait_is_forgotten() -> None:
    ledger = SequenceLedger()
    ledger.take(2)
    waiting = asyncio.ensure_future(ledger.wait_settled(2))
    cancelled = asyncio.ensure_future(ledger.wait_settled(1))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    ledger.fail_waiters(ConnectionError("closed"))
    with pytest.raises(ConnectionError):
        await waiting
