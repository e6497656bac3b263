"""The in-memory bus: a real broker that lives inside one process.

Topics are append-only logs. Each consumer group keeps its own read cursor,
so every group sees every message; the members of a group share the work
message by message, and whatever a member took but never acknowledged goes
back to the group when it leaves, to be handed to the next member that
fetches (at-least-once). A consumer without a group gets a private group
that dies with it (broadcast).

Retention: a topic keeps at most ``retention`` messages. Publishing into a
full topic waits while a group with live members has not yet acknowledged
the oldest entries (flow control rather than loss); entries that only
abandoned groups still wanted are trimmed, and counted in ``trimmed_unread``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from ..errors import BusClosed, ConfigurationError
from .base import (
    Backend,
    Delivery,
    GroupInfo,
    OffsetReset,
    PartitionLag,
    Record,
    Subscription,
    TopicInfo,
)

__all__ = ["DEFAULT_RETENTION", "MemoryBackend", "MemoryBroker"]

log = logging.getLogger("mlops_async.memory")

DEFAULT_RETENTION = 100_000

# How many deleted topic names a broker remembers the end offset of (one int each),
# oldest forgotten first. A name forgotten and then re-created numbers from 0 again.
_REMEMBERED_ENDS = 10_000


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    waiters.clear()


class _Topic:
    __slots__ = ("base", "data_waiters", "entries", "name", "space_waiters", "trimmed_unread")

    def __init__(self, name: str, base: int = 0) -> None:
        self.name = name
        self.entries: list[Record] = []  # entries[i] has offset base + i
        self.base = base
        self.data_waiters: list[asyncio.Future[None]] = []
        self.space_waiters: list[asyncio.Future[None]] = []
        self.trimmed_unread = 0

    @property
    def end(self) -> int:
        return self.base + len(self.entries)


class _Group:
    __slots__ = ("cursors", "members", "name", "pending", "private", "redeliver")

    def __init__(self, name: str, private: bool) -> None:
        self.name = name
        self.private = private
        self.cursors: dict[str, int] = {}  # next offset to hand out, per topic
        self.pending: dict[str, dict[int, int]] = {}  # topic -> offset -> member id
        self.redeliver: deque[tuple[str, int]] = deque()
        self.members: set[int] = set()

    def committed(self, topic: _Topic) -> int:
        """Lowest offset this group still needs (everything below is acknowledged)."""
        low = self.cursors.get(topic.name, topic.end)
        pending = self.pending.get(topic.name)
        if pending:
            low = min(low, min(pending))
        for t, off in self.redeliver:
            if t == topic.name and off < low:
                low = off
        return low


class MemoryBroker:
    """The state of one named in-memory bus; shared by every backend that names it."""

    _buses: dict[str, MemoryBroker] = {}  # noqa: RUF012 - process-wide registry by design

    def __init__(self, name: str, retention: int = DEFAULT_RETENTION) -> None:
        self.name = name
        self.retention = retention
        self.topics: dict[str, _Topic] = {}
        self.groups: dict[str, _Group] = {}
        # Deleted topic name -> where its log ended, oldest deletion first: a topic
        # re-created under that name numbers on from there (see delete_topic).
        self._ended: dict[str, int] = {}
        self._ids = itertools.count(1)

    @classmethod
    def get(cls, name: str, retention: int | None = None) -> MemoryBroker:
        bus = cls._buses.get(name)
        if bus is None:
            bus = cls._buses[name] = cls(name, retention or DEFAULT_RETENTION)
        elif retention is not None:
            bus.retention = retention
        return bus

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget one named bus (or all of them): for tests and notebooks."""
        if name is None:
            cls._buses.clear()
        else:
            cls._buses.pop(name, None)

    def topic(self, name: str) -> _Topic:
        t = self.topics.get(name)
        if t is None:
            # Re-created after a delete: the live topic now carries the number on.
            t = self.topics[name] = _Topic(name, self._ended.pop(name, 0))
        return t

    def _floor(self, topic: _Topic) -> int | None:
        """Lowest offset still needed by a group that has live members."""
        floors = [
            g.committed(topic)
            for g in self.groups.values()
            if g.members and topic.name in g.cursors
        ]
        return min(floors) if floors else None

    async def append(self, records: Sequence[Record]) -> None:
        by_topic: dict[str, list[Record]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        for name, recs in by_topic.items():
            for start in range(0, len(recs), self.retention):
                chunk = recs[start : start + self.retention]
                topic = await self._wait_for_space(name, len(chunk))
                topic.entries.extend(chunk)
                self._trim(topic)
                _wake(topic.data_waiters)

    async def _wait_for_space(self, name: str, n: int) -> _Topic:
        """The topic ``name`` once it has room for ``n`` more entries."""
        while True:
            # Looked up again after every wait: if the topic was deleted meanwhile, the
            # records go to the topic of that name now, not to the deleted log (lost),
            # and the wait is on a log someone will still free.
            topic = self.topic(name)
            floor = self._floor(topic)
            if floor is None or topic.end + n - floor <= self.retention:
                return topic
            fut = asyncio.get_running_loop().create_future()
            topic.space_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in topic.space_waiters:
                    topic.space_waiters.remove(fut)

    def _trim(self, topic: _Topic) -> None:
        excess = len(topic.entries) - self.retention
        if excess <= 0:
            return
        new_base = topic.base + excess
        for g in self.groups.values():
            cur = g.cursors.get(topic.name)
            if cur is not None and cur < new_base:
                topic.trimmed_unread += new_base - cur
                g.cursors[topic.name] = new_base
        del topic.entries[:excess]
        topic.base = new_base

    def delete_topic(self, name: str) -> None:
        """Drop ``name`` with every group's state for it: cursor, pending, redelivery queue.

        A topic created again under that name numbers its offsets on from where this
        log ended. A member may still hold deliveries of the deleted log (a delivery
        names only topic and offset): their offsets are all below the new log's base,
        never pending in it, so a late ack or nack of one is ignored instead of
        clearing or requeueing the new record that would have had that offset.
        """
        t = self.topics.pop(name, None)
        if t is not None:
            self._ended[name] = t.end  # not there while the topic lived: goes in newest
            if len(self._ended) > _REMEMBERED_ENDS:
                # Bounded: a process that churns through topic names keeps at most
                # this many ints. Only a name re-created after this many other
                # deletions loses the protection, and only for deliveries still in hand.
                del self._ended[next(iter(self._ended))]
        for g in self.groups.values():
            g.cursors.pop(name, None)
            g.pending.pop(name, None)
            if any(n == name for n, _ in g.redeliver):
                g.redeliver = deque(p for p in g.redeliver if p[0] != name)
        if t is not None:
            _wake(t.data_waiters)
            _wake(t.space_waiters)

    def join(
        self, group: str | None, topics: Sequence[str], reset: OffsetReset
    ) -> tuple[_Group, int]:
        member = next(self._ids)
        if group is None:
            g = self.groups[f"__private__.{member}"] = _Group(f"__private__.{member}", True)
        else:
            g = self.groups.get(group) or self.groups.setdefault(group, _Group(group, False))
        for name in topics:
            t = self.topic(name)
            if name not in g.cursors:
                g.cursors[name] = t.base if reset == "earliest" else t.end
        g.members.add(member)
        return g, member

    def take(self, g: _Group, member: int, topics: Sequence[str], n: int) -> list[Delivery]:
        out: list[Delivery] = []
        wanted = set(topics)
        # First what other members left unfinished, then new entries.
        if g.redeliver:
            keep: deque[tuple[str, int]] = deque()
            while g.redeliver and len(out) < n:
                name, off = g.redeliver.popleft()
                t = self.topics.get(name)
                if name not in wanted or t is None:
                    keep.append((name, off))
                    continue
                if not t.base <= off < t.end:
                    # No longer in the log: skipped, never indexed (an IndexError, or
                    # another record). Below base it was trimmed while nobody owned it,
                    # gone as a Kafka record past retention is; past the end it can only
                    # be stale (delete_topic drops a deleted topic's offsets).
                    if off < t.base:
                        t.trimmed_unread += 1
                    continue
                out.append(self._deliver(g, member, t, off))
            g.redeliver.extendleft(reversed(keep))
        for name in topics:
            if len(out) >= n:
                break
            t = self.topic(name)
            cur = g.cursors.setdefault(name, t.base)
            stop = min(t.end, cur + n - len(out))
            if cur >= stop:
                continue
            pending = g.pending.setdefault(name, {})
            base = t.base
            # No ``position`` tuple per message: a memory delivery's topic and offset
            # say where it came from (ack and nack read those). The run is registered
            # as pending in one C-level update rather than one store per message.
            offsets = range(cur, stop)
            pending.update(zip(offsets, itertools.repeat(member)))
            out += [
                Delivery(name, 0, off, r.value, r.key, r.headers)
                for off, r in zip(offsets, t.entries[cur - base : stop - base], strict=True)
            ]
            g.cursors[name] = stop
        return out

    def _deliver(self, g: _Group, member: int, t: _Topic, off: int) -> Delivery:
        r = t.entries[off - t.base]
        g.pending.setdefault(t.name, {})[off] = member
        return Delivery(t.name, 0, off, r.value, r.key, r.headers)

    def ack(self, g: _Group, deliveries: Sequence[Delivery]) -> None:
        touched = set()
        # A fetch hands out runs of one topic: look its pending up once per run. This
        # loop noticing a change of topic measured ~20 ns/message cheaper than groupby.
        name: str | None = None
        pending: dict[Any, int] | None = None
        for d in deliveries:
            if d.topic != name:
                name = d.topic
                pending = g.pending.get(name)
                if pending is not None:
                    touched.add(name)
            if pending is not None:
                pending.pop(d.offset, None)
        for name in touched:
            t = self.topics.get(name)
            if t is not None:
                _wake(t.space_waiters)

    def nack(self, g: _Group, member: int, deliveries: Sequence[Delivery]) -> None:
        """Put deliveries back at the front of the group's queue, for any member."""
        back: list[tuple[str, int]] = []
        for d in deliveries:
            name, off = d.topic, cast(int, d.offset)  # memory offsets are ints
            pending = g.pending.get(name)
            if pending is not None and pending.get(off) == member:
                del pending[off]
                back.append((name, off))
        g.redeliver.extendleft(reversed(back))
        for name in {n for n, _ in back}:
            t = self.topics.get(name)
            if t is not None:
                _wake(t.data_waiters)

    def leave(self, g: _Group, member: int) -> None:
        g.members.discard(member)
        returned: list[tuple[str, int]] = []
        for name, pending in g.pending.items():
            mine = [off for off, m in pending.items() if m == member]
            for off in mine:
                del pending[off]
            returned.extend((name, off) for off in mine)
        if g.private:
            self.groups.pop(g.name, None)
        else:
            g.redeliver.extend(sorted(returned, key=lambda p: p[1]))
        for t in self.topics.values():
            if returned:
                _wake(t.data_waiters)
            _wake(t.space_waiters)


class _MemorySubscription(Subscription):
    cheap_ack = True  # in-process, and publishers waiting for room need acks promptly

    def __init__(self, bus: MemoryBroker, group: _Group, member: int, topics: list[str]) -> None:
        self._bus = bus
        self._group = group
        self._member = member
        self._topics = topics
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        # Released deliveries go first in the group's line, for whichever member
        # fetches next; a private group has no other member to take them.
        self.releases = not group.private

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise BusClosed("subscription is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            out = self._bus.take(self._group, self._member, self._topics, max_records)
            if out:
                return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                return out
            fut = loop.create_future()
            topics = [self._bus.topic(name) for name in self._topics]
            for t in topics:
                t.data_waiters.append(fut)
            self._waiter = fut
            try:
                async with asyncio.timeout(remaining):  # not wait_for: 3.11 can swallow a cancel
                    await fut
            except TimeoutError:
                return []
            finally:
                self._waiter = None
                for t in topics:
                    if fut in t.data_waiters:
                        t.data_waiters.remove(fut)
            if self._closed:
                return []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._bus.ack(self._group, deliveries)

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._bus.nack(self._group, self._member, deliveries)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self.nack(deliveries)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            self._bus.leave(self._group, self._member)


class MemoryBackend(Backend):
    """``memory://`` or ``memory://name``: a bus shared by everything in this process."""

    scheme = "memory"

    def __init__(self, name: str = "default", *, retention: int | None = None, **options: Any):
        if options:
            unknown = ", ".join(sorted(options))
            raise ConfigurationError(f"memory:// takes no client options (got: {unknown})")
        self.name = name or "default"
        self._retention = retention
        self.bus: MemoryBroker | None = None

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset({"retention"})

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        name = url.split("://", 1)[1].strip("/") if "://" in url else url
        return cls(name or "default", **options)

    def _require(self) -> MemoryBroker:
        if self.bus is None:
            raise BusClosed("memory backend is not connected")
        return self.bus

    async def connect(self) -> None:
        self.bus = MemoryBroker.get(self.name, self._retention)

    async def close(self) -> None:
        self.bus = None

    async def publish(self, records: Sequence[Record]) -> None:
        await self._require().append(records)

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        bus = self._require()
        g, member = bus.join(group, topics, auto_offset_reset)
        return _MemorySubscription(bus, g, member, list(topics))

    async def list_topics(self) -> list[TopicInfo]:
        bus = self._require()
        return [TopicInfo(t.name, 1, len(t.entries)) for t in bus.topics.values()]

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        # One log per topic: partitions and replication have no meaning in one process.
        self._require().topic(name)

    async def delete_topic(self, name: str) -> None:
        self._require().delete_topic(name)

    async def describe_groups(self) -> list[GroupInfo]:
        bus = self._require()
        return [
            GroupInfo(
                g.name,
                tuple(g.cursors),
                len(g.members),
                "Stable" if g.members else "Empty",
                tuple(self._lag(bus, g)),
            )
            for g in bus.groups.values()
            if not g.private
        ]

    async def group_lag(self, group: str) -> list[PartitionLag]:
        bus = self._require()
        g = bus.groups.get(group)
        return [] if g is None else self._lag(bus, g)

    @staticmethod
    def _lag(bus: MemoryBroker, g: _Group) -> list[PartitionLag]:
        out = []
        for name in g.cursors:
            t = bus.topic(name)
            committed = g.committed(t)
            pending = len(g.pending.get(name, ())) + sum(1 for n, _ in g.redeliver if n == name)
            out.append(PartitionLag(name, 0, committed, t.end, t.end - committed, pending))
        return out
