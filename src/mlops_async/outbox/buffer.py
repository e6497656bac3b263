"""The producer's bounded memory: records accepted and not yet settled.

A record counts against the bound from the moment it is accepted until the
broker confirmed (or refused) it, so memory stays bounded whatever the broker
does. One rule says when more records fit (:meth:`RecordBuffer.full_for`);
``Producer.send`` inlines it on its fast path and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from ..backends import Record

__all__ = ["RecordBuffer"]


class RecordBuffer:
    """Records queued for the sender, and the count and bytes of all not yet settled."""

    __slots__ = ("_room", "bytes", "count", "max_bytes", "max_count", "records")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.records: list[Record] = []  # accepted, not yet cut into a batch
        self.count = 0  # records accepted and not settled: queued here or in flight
        self.bytes = 0
        self._room: deque[asyncio.Future[None]] = deque()

    def full_for(self, n: int, size: int) -> bool:
        """True if ``n`` more records of ``size`` bytes do not fit now.

        An empty buffer takes anything, so a record larger than the byte bound
        still goes (alone) instead of waiting forever.
        """
        return bool(self.count) and (
            self.count + n > self.max_count or self.bytes + size > self.max_bytes)

    def admit(self, records: list[Record], size: int) -> None:
        """Queue ``records`` (``size`` bytes in all); the caller checked :meth:`full_for`."""
        self.records += records
        self.count += len(records)
        self.bytes += size

    async def wait_for_room(self, deadline: float | None) -> None:
        """Return at the next settlement or :meth:`wake_all` (the caller checks again).

        Raises ``TimeoutError`` at ``deadline`` (loop time).
        """
        fut = asyncio.get_running_loop().create_future()
        self._room.append(fut)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that arrives as the future completes.
            async with asyncio.timeout_at(deadline):
                await fut
        finally:
            with contextlib.suppress(ValueError):
                self._room.remove(fut)

    def cut(self, batch_size: int, batch_bytes: int, in_flight_bytes: int
            ) -> tuple[list[Record], int]:
        """Take the oldest records: up to ``batch_size`` and about ``batch_bytes``.

        The byte bound uses the average record size, so the cut is one C-level
        slice rather than a Python loop over every record. Taking every queued
        record (the common case) needs no pass at all: their size is what is
        not in flight (``in_flight_bytes``).
        """
        buf = self.records
        n = min(len(buf), batch_size)
        if self.bytes > batch_bytes and self.count:
            n = max(1, min(n, batch_bytes * self.count // self.bytes))
        if n == len(buf):
            self.records = []
            return buf, self.bytes - in_flight_bytes
        batch = buf[:n]
        del buf[:n]
        return batch, sum([len(r.value) for r in batch])

    def settled(self, n: int, size: int) -> None:
        """``n`` records of ``size`` bytes left the buffer for good: room for waiters."""
        self.count -= n
        self.bytes -= size
        self.wake_all()

    def clear(self) -> list[Record]:
        """Forget every queued record (the caller holds the ones in flight): returns them."""
        records, self.records = self.records, []
        self.count = 0
        self.bytes = 0
        self.wake_all()
        return records

    def wake_all(self) -> None:
        """Wake every sender waiting for room; each checks the buffer again."""
        while self._room:
            fut = self._room.popleft()
            if not fut.done():
                fut.set_result(None)
