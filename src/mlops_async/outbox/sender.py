"""The producer's sender: one task that cuts the buffer into batches and delivers them.

Up to ``max_in_flight`` batches are handed to the broker client before the
oldest is confirmed; batches are settled strictly in order. While the broker
is away the oldest batch is published again with backoff, or, with a spool,
everything unsettled moves to disk (:mod:`.spooling`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .._client import Backoff, Outage
from ..backends import Backend, Record
from ..errors import AuthenticationError, BusUnavailable
from .buffer import RecordBuffer
from .ledger import SequenceLedger
from .spooling import SpoolPath

__all__ = ["Batching", "Sender"]

log = logging.getLogger("mlops_async.producer")


class Batching:
    """How the sender cuts and pipelines batches."""

    __slots__ = ("batch_bytes", "batch_size", "linger", "max_in_flight")

    def __init__(self, batch_size: int, batch_bytes: int, linger: float,
                 max_in_flight: int) -> None:
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.linger = linger
        self.max_in_flight = max(1, max_in_flight)


class Sender:
    """Delivers what the buffer holds; see the module docstring."""

    def __init__(self, backend: Backend, buffer: RecordBuffer, ledger: SequenceLedger,
                 outage: Outage, batching: Batching, *, strict: bool,
                 spool: SpoolPath | None) -> None:
        self.backend = backend
        self.buffer = buffer
        self.ledger = ledger
        self.outage = outage
        self.batching = batching
        self.strict = strict
        self.spool = spool
        # Batches handed to the broker client and not yet settled, oldest first.
        self.pipeline: deque[tuple[list[Record], int, asyncio.Future[None] | None]] = deque()
        # True while accepted records go to the spool instead of the buffer (an outage,
        # or the spool still holds older records that must go first).
        self.spooling = False
        # Set while the task waits for work; cleared by whoever wakes it, so a send looks
        # at one attribute, not at a future, per message. woken: woken, not run yet.
        self.waiting: asyncio.Future[None] | None = None
        self.woken = False
        self.connected = False
        self.sent = 0
        self._auth_failed = False
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervised(), name="mlops_async.producer.sender")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> list[Record]:
        """Stop the task; returns every record not settled, oldest first (none are lost)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        pending = [c for _, _, c in self.pipeline if c is not None and not c.done()]
        for confirm in pending:
            confirm.cancel()
        if pending:
            await asyncio.wait(pending)  # collects their outcome without raising it
        for _, _, c in self.pipeline:
            if c is not None and c.done() and not c.cancelled():
                c.exception()  # retrieved: their records are returned below
        unsent = [r for batch, _, _ in self.pipeline for r in batch] + self.buffer.records
        self.pipeline.clear()
        self.buffer.records = []
        return unsent

    def wake(self) -> None:
        """Wake the task waiting for work (``waiting`` is not None)."""
        waiting, self.waiting = self.waiting, None
        self.woken = True
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def park(self) -> None:
        """Wait until :meth:`wake` (a send, or close)."""
        self.waiting = asyncio.get_running_loop().create_future()
        try:
            await self.waiting
        finally:
            self.waiting = None
            self.woken = False

    # -- delivery ---------------------------------------------------------------

    async def _supervised(self) -> None:
        """Run the sender; an unexpected error (a disk the spool cannot read) is logged
        with its traceback and the sender starts again, never dying silently."""
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            try:
                await self._run()
            except Exception:
                log.exception("producer sender failed; starting it again")
                await asyncio.sleep(backoff.next_delay())

    async def _run(self) -> None:
        pipeline, buffer, batching = self.pipeline, self.buffer, self.batching
        while True:
            if self.spooling:
                assert self.spool is not None
                await self.spool.drain(self)
                continue
            if not buffer.records and not pipeline:
                await self.park()
                if batching.linger > 0 and len(buffer.records) < batching.batch_size:
                    await asyncio.sleep(batching.linger)
            while buffer.records and len(pipeline) < batching.max_in_flight:
                batch, size = buffer.cut(batching.batch_size, batching.batch_bytes,
                                         sum([s for _, s, _ in pipeline]))
                confirm = await self._enqueue(batch)
                pipeline.append((batch, size, confirm))
                if confirm is None:
                    break  # the broker is away: settle (and retry) before enqueueing more
            if not pipeline:
                continue
            # The oldest batch stays in the pipeline until settled: close() and a
            # spill to the spool find every unsettled record there or in the buffer.
            batch, size, confirm = pipeline[0]
            if not await self._deliver(batch, confirm):
                continue  # spilled to the spool, with everything behind it
            pipeline.popleft()
            self.ledger.settle(len(batch))  # settlement waiters first, then room (as before)
            buffer.settled(len(batch), size)

    async def connect(self) -> None:
        if not self.connected:
            await self.backend.connect()
            self.connected = True

    async def _enqueue(self, batch: list[Record]) -> asyncio.Future[None] | None:
        """Hand ``batch`` to the broker client; None if that failed (``_deliver`` retries)."""
        try:
            await self.connect()
            return await self.backend.enqueue(batch)
        except Exception:
            return None

    async def _deliver(self, batch: list[Record], confirm: asyncio.Future[None] | None) -> bool:
        """Wait for ``batch`` to be confirmed, publishing it again while the broker is away.

        Returns False if the broker is away and the records went to the spool instead.
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            try:
                if confirm is not None:
                    await confirm
                else:
                    await self.connect()
                    await self.backend.publish(batch)
            except BusUnavailable as exc:
                confirm = None
                if self.spool is not None:
                    self.outage.down(exc, loop.time(), "messages go to the spool "
                                     f"{str(self.spool.directory)!r}")
                    await self.spool.spill(self)
                    return False
                self.outage.down(exc, loop.time(), f"{self.buffer.count} message(s) held")
                if self.strict:
                    self.ledger.fail_waiters(exc)
                    self.buffer.wake_all()  # sends waiting for room raise BusUnavailable
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # refused for good: report, never hide
                self.refuse(len(batch), exc, sorted({r.topic for r in batch}))
                return True
            self.sent += len(batch)
            if self.outage.active:
                self.outage.up(loop.time(), f"delivering {self.buffer.count} held message(s)")
            return True

    def refuse(self, n: int, exc: BaseException, topics: list[str]) -> None:
        """The broker refused the next ``n`` records for good: recorded, and said once."""
        self.ledger.refuse(n, exc)
        if isinstance(exc, AuthenticationError):
            # One ERROR for bad credentials, not one per batch.
            level = logging.DEBUG if self._auth_failed else logging.ERROR
            self._auth_failed = True
            log.log(level, "%s; %d record(s) refused", exc, n)
            return
        log.error("broker refused %d record(s) for %s: %s", n, topics, exc)
