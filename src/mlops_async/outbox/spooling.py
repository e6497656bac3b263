"""The producer's way through local disk while the broker is away (``spool=``).

While the broker is away, :meth:`SpoolPath.accept` writes what ``send``
accepts to the spool before ``send`` returns; when it goes away with records
in flight, :meth:`SpoolPath.spill` moves every unsettled record there, in
order; :meth:`SpoolPath.drain` delivers the spool, oldest first, until it is
empty, and sends go to the broker again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .._client import Backoff
from ..backends import Record
from ..errors import BusClosed, BusError, BusUnavailable, MessageTooLarge, PublishError, SendTimeout
from ..spool import Spool
from .ledger import SequenceLedger

if TYPE_CHECKING:
    from .sender import Sender

__all__ = ["SpoolPath"]

log = logging.getLogger("mlops_async.producer")


class SpoolPath:
    """A producer's spool and the rules for using it."""

    def __init__(self, directory: str | Path, max_bytes: int, ledger: SequenceLedger) -> None:
        self.spool = Spool(directory, max_bytes=max_bytes)
        self.ledger = ledger
        self._room = asyncio.Event()
        self._blocked: type[BaseException] | None = None  # the error last logged by drain

    @property
    def directory(self) -> Path:
        return self.spool.directory

    async def open(self) -> int:
        """Open the spool; returns how many records an earlier producer left in it."""
        await self.spool.open()
        return self.spool.rows

    async def close(self) -> None:
        self._room.set()  # sends waiting for room see the closed state
        await self.spool.close()

    async def accept(self, records: list[Record], sender: Sender, send_timeout: float | None,
                     closing: Callable[[], bool]) -> None:
        """Write ``records`` (one message, to each of its topics) before returning."""
        spool = self.spool
        size = sum(len(r.value) for r in records)
        loop = asyncio.get_running_loop()
        deadline = None if send_timeout is None else loop.time() + send_timeout
        while not spool.room(size):
            if closing():
                raise BusClosed("producer is closed")
            self._room.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._room.wait()
            except TimeoutError:
                raise SendTimeout(
                    f"spool full ({spool.bytes} of {spool.max_bytes} bytes) for {send_timeout}s"
                ) from None
        # Numbered with no await before append() queues the records, so concurrent
        # sends keep their order in the spool.
        first = self.ledger.take(len(records))
        try:
            await spool.append(records)
        except Exception as exc:  # not accepted: say so here, settle the gap in the sender
            err = BusError(f"cannot write to the spool {str(spool.directory)!r}: {exc!r}")
            self.ledger.add_hole(first, first + len(records) - 1, err)
            if sender.waiting is not None:
                sender.wake()
            raise err from exc
        if sender.waiting is not None:  # a sender parked on an empty spool delivers this now
            sender.wake()

    async def keep(self, records: list[Record]) -> bool:
        """At close: keep what is still undelivered for the next producer; False if not."""
        try:
            await self.spool.append(records)
        except Exception as exc:
            log.error("producer close: cannot write to the spool: %r", exc)
            return False
        log.warning("producer closed with %d message(s) undelivered: kept in the spool %s for "
                    "the next producer", len(records), str(self.directory))
        return True

    async def spill(self, sender: Sender) -> None:
        """The broker went away: move every unsettled record to the spool, in order."""
        sender.spooling = True  # from now on send() writes to the spool, behind these
        for _, _, confirm in sender.pipeline:
            if confirm is not None and not confirm.done():
                confirm.cancel()  # a late confirmation would only mean a duplicate
        records = [r for batch, _, _ in sender.pipeline for r in batch]
        sender.pipeline.clear()
        records += sender.buffer.clear()
        first = self.ledger.settled + 1
        if records:
            # Already accepted: they go in whatever the spool's size bound says.
            try:
                await self.spool.append(records)
            except Exception as exc:  # the disk failed too: lost, and said loudly
                log.error("producer: %d message(s) lost: the broker is away and the spool "
                          "%s cannot be written: %r", len(records), str(self.directory), exc)
                self.ledger.add_hole(first, first + len(records) - 1, exc, oldest=True)
                self.ledger.settle_holes()

    async def drain(self, sender: Sender) -> None:
        """Deliver the spool, oldest first, until it is empty; then sends go to the broker."""
        spool, ledger = self.spool, self.ledger
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            ledger.settle_holes()
            rows = await spool.head(sender.batching.batch_size)
            if not rows:
                if spool.rows == 0 and sender.outage.active:
                    # Empty, but the broker is still away: what send() accepts next
                    # must go to disk too, so stay in spool mode until a send wakes us.
                    await sender.park()
                    continue
                if spool.rows == 0:
                    sender.spooling = False
                    return
                await spool.flushed()  # appends in flight: they are next
                continue
            records = [r for _, r in rows]
            try:
                await sender.connect()
                await sender.backend.publish(records)
            except BusUnavailable as exc:
                sender.outage.down(exc, loop.time(), f"{spool.rows} message(s) in the spool")
                await asyncio.sleep(backoff.next_delay())
                continue
            except (PublishError, MessageTooLarge) as exc:  # these records refused for good
                refused: BaseException | None = exc
            except Exception as exc:
                # Not about these records (bad credentials, a missing extra, a bug): the
                # spool keeps them; say why once, and try again later.
                if type(exc) is not self._blocked:
                    self._blocked = type(exc)
                    log.error("producer: cannot deliver the spool %s (%d record(s) kept): %r",
                              str(spool.directory), spool.rows, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            else:
                refused = None
                self._blocked = None
                sender.sent += len(records)
                backoff.reset()
                if sender.outage.active:
                    sender.outage.up(loop.time(), f"delivering {spool.rows} spooled message(s)")
            await spool.remove(rows[-1][0], len(rows), sum(len(r.value) for r in records))
            # Every row has its place in this producer's sequence: its own sends, what
            # it spilled, and (counted at start) what an earlier producer left.
            if refused is not None:
                sender.refuse(len(rows), refused, sorted({r.topic for r in records}))
            ledger.settle_rows(len(rows))
            self._room.set()
