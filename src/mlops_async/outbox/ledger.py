"""Where every record a producer accepted stands: queued, settled, refused, confirmed.

Records are numbered in the order they were accepted (1, 2, ...). They are
settled in that same order, each either confirmed by the broker or refused
for good; :meth:`SequenceLedger.confirmed` turns a range of numbers into a
future, so a caller can act on confirmation without a task per message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..errors import PublishError

__all__ = ["SequenceLedger"]

# Refusals older than every waiter cannot be reported to anyone; keep this many.
_KEEP_FAILURES = 100


class SequenceLedger:
    """Sequence numbers of accepted records, and who waits for them to be settled."""

    __slots__ = ("_failures", "_holes", "_listeners", "_waiters", "failed", "queued", "settled")

    def __init__(self) -> None:
        self.queued = 0  # number of the last record accepted
        self.settled = 0  # records confirmed or refused, in accepted order
        self.failed = 0  # records refused
        self._failures: list[tuple[int, int, BaseException]] = []  # (first, last, error)
        # Ranges that were accepted but never reached the spool (a failed disk write),
        # oldest first: settled as refused when delivery gets to them.
        self._holes: deque[tuple[int, int, BaseException]] = deque()
        # (last, first, future), registered with non-decreasing ``last``.
        self._waiters: deque[tuple[int, int, asyncio.Future[None]]] = deque()
        self._listeners: list[Callable[[int], None]] = []

    def take(self, n: int) -> int:
        """Number ``n`` more records; returns the first one's number."""
        first = self.queued + 1
        self.queued += n
        return first

    # -- settling -------------------------------------------------------------

    def settle(self, n: int) -> None:
        """The next ``n`` records are settled (confirmed, or refused just before)."""
        self.settled += n
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.settled:
            _, first, fut = waiters.popleft()
            self._resolve(fut, first, self.settled)
        for listener in self._listeners:
            listener(self.settled)
        if len(self._failures) > _KEEP_FAILURES and not waiters:
            del self._failures[:-_KEEP_FAILURES]

    def refuse(self, n: int, exc: BaseException) -> None:
        """The next ``n`` records are refused with ``exc`` (settle them after)."""
        if n:
            first = self.settled + 1
            self._failures.append((first, first + n - 1, exc))
            self.failed += n

    def add_hole(self, first: int, last: int, exc: BaseException, *, oldest: bool = False) -> None:
        """Records ``first..last`` never reached the spool: refused once they are next."""
        if oldest:
            self._holes.appendleft((first, last, exc))
        else:
            self._holes.append((first, last, exc))

    def settle_holes(self) -> None:
        """Settle, as refused, the ranges that never reached the spool once they are next."""
        holes = self._holes
        while holes and holes[0][0] == self.settled + 1:
            first, last, exc = holes.popleft()
            self._failures.append((first, last, exc))
            self.failed += last - first + 1
            self.settle(last - first + 1)

    def settle_rows(self, n: int) -> None:
        """Settle ``n`` records delivered from the spool, and the holes between them, in order."""
        while n:
            self.settle_holes()
            step = n if not self._holes else min(n, self._holes[0][0] - self.settled - 1)
            self.settle(step)
            n -= step
        self.settle_holes()

    # -- waiting --------------------------------------------------------------

    def confirmed(self, first: int, last: int) -> asyncio.Future[None]:
        """A future that resolves once records ``first..last`` are settled.

        It fails with :class:`PublishError` if the broker refused any of them.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.settled >= last:
            self._resolve(fut, first, last)
        else:
            self._waiters.append((last, first, fut))
        return fut

    async def wait_settled(self, target: int) -> None:
        """Return once every record up to ``target`` is settled (raises like :meth:`confirmed`)."""
        fut = self.confirmed(self.settled + 1, target)
        try:
            await fut
        finally:
            if not fut.done():  # timed out or cancelled: forget the waiter
                fut.cancel()
                self._waiters = deque(w for w in self._waiters if w[2] is not fut)

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(settled)`` each time records up to ``settled`` are settled."""
        self._listeners.append(listener)

    def refused(self, first: int, last: int) -> PublishError | None:
        """The error if the broker refused any record in ``first..last``, else None."""
        if not self._failures:
            return None
        failed = [(a, b, e) for a, b, e in self._failures if b >= first and a <= last]
        if not failed:
            return None
        count = sum(min(b, last) - max(a, first) + 1 for a, b, _ in failed)
        err = failed[-1][2]
        exc = PublishError(f"{count} record(s) were refused by the broker: {err}")
        exc.__cause__ = err
        return exc

    def fail_waiters(self, exc: BaseException) -> None:
        """Everyone waiting for a settlement gets ``exc`` (close, strict-mode outage)."""
        waiters, self._waiters = self._waiters, deque()
        for _, _, fut in waiters:
            if not fut.done():
                fut.set_exception(exc)

    def _resolve(self, fut: asyncio.Future[None], first: int, last: int) -> None:
        if fut.done():
            return
        exc = self.refused(first, last)
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
