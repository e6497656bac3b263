"""The partition offset ledger both Kafka subscriptions keep (no I/O, no asyncio).

Kafka commits one offset per partition: "everything below this is done". A
consumer that works on several records at once may finish them in any order,
so the ledger keeps, per partition, the offsets handed out and not yet
acknowledged, and commits only the acknowledged prefix: the next offset to
commit is one past the highest offset below which every record handed out
was acknowledged. A record still being processed is never skipped by a
later commit.

Ownership is by epoch. Every delivery carries ``position = (key, epoch it
was fetched in)``. A revocation (:meth:`forget`) or a rewind (:meth:`rewound`,
after a seek back for ``nack``) starts a new epoch; a delivery fetched
before it, from that partition (and for a rewind, at or past the offset
sought back to), is stale: its partition is read again, by its new owner or
from the rewind, and its acknowledgement is ignored.

What the backends do around it: hand out deliveries and note their offsets
(:meth:`handed_out`), seek, commit what :meth:`take` returns and put back
with :meth:`restore` what the broker refused. The confluent backend calls
this from its consumer thread while the event loop calls :meth:`owns`: every
method writes what :meth:`owns` reads before it makes the new epoch public.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from itertools import groupby, islice, repeat, starmap, takewhile
from operator import attrgetter
from typing import Any, Generic, TypeVar

from ..base import Delivery

__all__ = ["PartitionLedger", "keep_highest"]

K = TypeVar("K", bound=Hashable)

_POSITION = attrgetter("position")
_drain = deque[Any](maxlen=0).extend  # consumes an iterator in C, keeping nothing
_ALL = 1 << 63  # above every Kafka offset: no copy is stale
_LONG_RUN = 8  # runs out of order at least this long are folded a run at a time


class PartitionLedger(Generic[K]):
    """Offsets handed out, acknowledged and due for commit, per partition key ``K``.

    ``epoch`` grows with every revocation or rewind; ``changed_at`` is the
    epoch of the last one (deliveries fetched since are owned without a look
    at the partition). ``to_commit`` maps a partition to the next offset to
    commit, for acknowledgements not yet taken by a commit.
    """

    __slots__ = ("_done", "_outstanding", "_revoked_at", "_rewound", "changed_at", "epoch",
                 "to_commit")

    def __init__(self) -> None:
        self.epoch = 0
        self.changed_at = 0
        self.to_commit: dict[K, int] = {}
        # Offsets handed out and not yet part of the acknowledged prefix, in order.
        self._outstanding: dict[K, deque[int]] = {}
        # Acknowledged out of order: waiting for the offsets below them.
        self._done: dict[K, set[int]] = {}
        # The epoch at which each partition was last taken away.
        self._revoked_at: dict[K, int] = {}
        # Partitions rewound: (epoch of the rewind, offset sought back to).
        self._rewound: dict[K, tuple[int, int]] = {}

    def owns(self, delivery: Delivery) -> bool:
        """False once ``delivery`` is stale: its partition was revoked, or rewound to
        at or below its offset, after it was fetched.

        Only the latest rewind of a partition is kept (memory stays flat however
        often a consumer nacks): a copy an earlier rewind made stale, if still in
        hand, reads as owned again once a later rewind passes it. Acknowledged,
        it stands for a record that was processed, so a commit past it skips
        nothing (that record is at most processed twice).
        """
        key, fetched_in = delivery.position
        return int(delivery.offset) < self._owned_below(key, fetched_in)

    def _owned_below(self, key: K, fetched_in: int) -> int:
        """Copies of ``key`` fetched in epoch ``fetched_in`` are owned below this offset."""
        if fetched_in < self._revoked_at.get(key, 0):
            return -1
        rewound = self._rewound.get(key)
        if rewound is not None and fetched_in < rewound[0]:
            return rewound[1]
        return _ALL

    def handed_out(self, key: K) -> deque[int]:
        """The offsets of ``key`` handed out and not yet committable: append each
        offset handed out, in order (one lookup per partition and fetch)."""
        q = self._outstanding.get(key)
        if q is None:
            q = self._outstanding[key] = deque()
            self._done[key] = set()
        return q

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Fold acknowledgements into ``to_commit``; stale or repeated ones change nothing.

        Deliveries of one partition's fetch share one ``position``, so they
        are taken in runs of it, ownership looked up once per run. A run that is
        exactly the head of its partition's outstanding offsets (acknowledged
        in order, the usual case) leaves it at once, in C; another waits in
        ``done`` until the offsets below it come. Short calls, and short runs out
        of order (acks of several fetches interleaved), cost less record by
        record: from the first such run the rest of the call goes so (:meth:`_fold`).
        """
        if len(deliveries) < _LONG_RUN:
            self._fold(deliveries, 0)
            return
        outstanding, done_sets, to_commit = self._outstanding, self._done, self.to_commit
        changed = self.changed_at
        start = 0  # index of the run's first delivery
        for (key, fetched_in), run in groupby(deliveries, _POSITION):
            offsets: list[int] = [d.offset for d in run]  # type: ignore[misc]
            n = len(offsets)
            q = outstanding.get(key)
            if q and fetched_in < changed:  # a revocation or rewind since
                limit = self._owned_below(key, fetched_in)
                if limit != _ALL:
                    offsets = list(filter(limit.__gt__, offsets))
            if not q or not offsets:
                start += n
                continue  # stale, or nothing handed out is waiting
            m = len(offsets)
            done = done_sets[key]
            if not done and offsets[0] == q[0] and (m == 1 or offsets == list(islice(q, m))):
                if m == len(q):
                    q.clear()
                elif m == 1:
                    q.popleft()
                else:
                    _drain(starmap(q.popleft, repeat((), m)))
                to_commit[key] = offsets[-1] + 1
            elif n >= _LONG_RUN:
                head = q[0]
                done.update(filter(head.__le__, offsets))  # below the head: committable already
                if head in done:
                    self._settle(key)
            else:
                self._fold(deliveries, start)
                return
            start += n

    def _fold(self, deliveries: Sequence[Delivery], start: int) -> None:
        """:meth:`ack` record by record, from ``deliveries[start]`` on."""
        outstanding, done_sets, to_commit = self._outstanding, self._done, self.to_commit
        changed = self.changed_at
        seen: set[K] = set()
        last_pos: object = None
        key: Any = None
        q: deque[int] | None = None
        done: set[int] = set()
        limit = _ALL
        for d in islice(deliveries, start, None):
            pos = d.position
            if pos is not last_pos:
                last_pos = pos
                key, fetched_in = pos
                q = outstanding.get(key)
                if q is not None:
                    seen.add(key)
                    done = done_sets[key]
                    limit = self._owned_below(key, fetched_in) if fetched_in < changed else _ALL
            offset: int = d.offset  # type: ignore[assignment]
            if not q or offset >= limit:
                continue  # stale, or nothing handed out is waiting
            head = q[0]
            if offset == head and not done:
                q.popleft()
                to_commit[key] = offset + 1
            elif offset >= head:  # below the head: committable already
                done.add(offset)
        for key in seen:
            q = outstanding[key]
            if q and q[0] in done_sets[key]:
                self._settle(key)

    def _settle(self, key: K) -> None:
        """Move the acknowledged prefix of ``key`` out of its outstanding offsets."""
        q, done = self._outstanding[key], self._done[key]
        prefix = list(takewhile(done.__contains__, q))
        if prefix:
            done.difference_update(prefix)
            if len(prefix) == len(q):
                q.clear()
            else:
                _drain(starmap(q.popleft, repeat((), len(prefix))))
            self.to_commit[key] = prefix[-1] + 1

    def lowest(self, deliveries: Iterable[Delivery]) -> dict[K, int]:
        """The lowest owned offset per partition among ``deliveries`` (where ``nack``
        seeks back to: Kafka redelivers from there)."""
        lowest: dict[K, int] = {}
        for d in deliveries:
            if self.owns(d):
                key = d.position[0]
                offset = int(d.offset)
                if offset < lowest.get(key, offset + 1):
                    lowest[key] = offset
        return lowest

    def rewound(self, moved: Mapping[K, int]) -> int:
        """Note the seeks back that succeeded (partition -> offset sought to); the
        epoch, new if any moved. Copies fetched before, at or past the offset, are stale."""
        if not moved:
            return self.epoch
        epoch = self.epoch + 1
        for key, offset in moved.items():
            self._rewound[key] = (epoch, offset)
            q = self._outstanding.get(key)
            if q is not None:
                self._outstanding[key] = deque(o for o in q if o < offset)
                self._done[key] = {o for o in self._done[key] if o < offset}
        self.changed_at = self.epoch = epoch
        return epoch

    def forget(self, keys: Collection[K]) -> int:
        """Partitions taken away: drop their bookkeeping (and what was due for commit);
        the epoch, new if any went. Copies fetched before are stale."""
        if not keys:
            return self.epoch
        epoch = self.epoch + 1
        for key in keys:
            self._revoked_at[key] = epoch
            self._outstanding.pop(key, None)
            self._done.pop(key, None)
            self._rewound.pop(key, None)
            self.to_commit.pop(key, None)
        self.changed_at = self.epoch = epoch
        return epoch

    def take(self, only: Collection[K] | None = None) -> dict[K, int]:
        """Remove and return what is due for commit (of ``only``'s partitions, if given)."""
        if only is None:
            taken, self.to_commit = self.to_commit, {}
            return taken
        return {key: self.to_commit.pop(key) for key in list(self.to_commit) if key in only}

    def confirm(self, offsets: Mapping[K, int]) -> None:
        """The broker holds these offsets: nothing at or below them is due any more
        (a failed earlier commit put back meanwhile must not send a partition back)."""
        to_commit = self.to_commit
        for key, offset in offsets.items():
            if to_commit.get(key, offset + 1) <= offset:
                del to_commit[key]

    def restore(self, offsets: Mapping[K, int]) -> None:
        """Put back offsets a commit did not deliver (kept where something higher is due);
        partitions no longer tracked are left out (their new owner commits)."""
        keep_highest(self.to_commit, {k: o for k, o in offsets.items() if k in self._outstanding})


def keep_highest(into: dict[K, int], offsets: Mapping[K, int]) -> None:
    """Merge next offsets to commit: a partition keeps the highest (commits never go back)."""
    for key, offset in offsets.items():
        if offset > into.get(key, -1):
            into[key] = offset
