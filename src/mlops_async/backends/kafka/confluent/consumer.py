"""A librdkafka consumer behind the Subscription seam (``kafka+confluent://``).

One thread per subscription runs every librdkafka call of its consumer:
``consume()``, commits, seeks, and the rebalance callbacks librdkafka runs
inside ``consume()``. That thread alone owns the offset bookkeeping, so
acknowledgements, commits, rewinds and revocations never race. The loop
hands it work through an inbox that a running fetch serves between its short
waits, so a commit or a rewind never waits for a long poll to end.

At-least-once: offsets are committed only up to the first record not yet
acknowledged in each partition. Commits are asynchronous (what the broker
refuses goes again with the next one); the revoke callback commits what was
acknowledged synchronously before its partitions go, then forgets them and
bumps ``epoch``; records fetched before that are never committed (the
Consumer drops them, their new owner reads them again). Closing commits
synchronously too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from ....errors import BusUnavailable
from ...base import Delivery, OffsetReset, Subscription
from ..ledger import PartitionLedger
from ..pacing import CommitPacer
from .errors import (
    DOWN_CODES,
    QUIET_CODES,
    REBALANCED_CODES,
    code,
    raise_ours,
    to_ours,
)
from .thread import ClientThread, bounded, quiet

__all__ = ["ConfluentSubscription"]

log = logging.getLogger("mlops_async.confluent")

_Key = tuple[str, int]
# Loop -> thread: acknowledgements, or a rewind (nack), each with its waiter (or None).
_Ack = tuple[str, Sequence[Delivery], "asyncio.Future[None] | None"]
_Rewind = tuple[str, dict[_Key, int], "asyncio.Future[None] | None"]

# The longest a fetch waits inside librdkafka before it looks at its inbox again.
_SLICE = 0.1


class ConfluentSubscription(Subscription):
    """A librdkafka consumer driven from its own thread, alone or in a consumer group.

    ``revocations`` counts the rebalances that took partitions away (a test
    of static membership asserts that a restart caused none).
    """

    def __init__(
        self,
        build: Callable[[dict[str, Any]], Consumer],
        conf: dict[str, Any],
        topics: list[str],
        group: str | None,
        reset: OffsetReset,
        *,
        connect_timeout: float,
        commit_timeout: float,
        max_records: int | None,
        on_close: Callable[[ConfluentSubscription], None],
    ) -> None:
        # Commit reports arrive inside consume(), on this subscription's thread.
        self.consumer = build({**conf, "on_commit": self._on_commit})
        self.topics = topics
        self.group = group
        self.reset = reset
        self.epoch = 0
        self.revocations = 0
        self._connect_timeout = connect_timeout
        self._commit_timeout = commit_timeout
        self._max_records = max_records  # max_poll_records, if given
        self._on_close = on_close
        self._thread = ClientThread("confluent-consumer")
        self._loop = asyncio.get_running_loop()
        # Thread-side state: only the consumer's thread writes these. The ledger's
        # ownership (owns(), changed_at) is read on the loop too: it writes what owns()
        # reads before a new epoch is made public.
        self._ledger: PartitionLedger[_Key] = PartitionLedger()
        self._committed: dict[_Key, int] = {}  # what the broker confirmed
        self._sent: dict[_Key, int] = {}  # what asynchronous commits sent
        self._assigned: set[_Key] = set()
        self._unassigned: list[str] = []  # broadcast topics whose partitions are unknown yet
        self._next_lookup = 0.0
        self._inbox: deque[_Ack | _Rewind] = deque()
        # Fetch jobs commit asynchronously at most once an interval (monotonic clock):
        # every record the thread spends on a commit is one the loop waits for.
        # Acknowledgements are still folded at once; a deferred commit goes with a later
        # fetch, or a job of its own (see _serve_soon).
        self._pacer = CommitPacer()
        # True while a fetch job deferred a commit (written on the thread, read on the
        # loop as a hint: see _defer and _serve_soon).
        self._deferred = False
        # True from subscribe (and from a revocation) until partitions are assigned.
        self._joining = False
        self._session = float(conf.get("session.timeout.ms", 45_000)) / 1000
        self._fetching: asyncio.Future[list[Delivery]] | None = None
        self._kick: asyncio.TimerHandle | None = None  # commits acks no fetch picked up
        self._closing = False
        self._closed = False

    # -- loop side --------------------------------------------------------------

    async def start(self) -> None:
        """Check the broker answers, then subscribe (or assign every partition)."""
        await bounded(self._thread.run(self._start), self._connect_timeout + 5,
                      f"cannot subscribe to {self.topics}")

    def owns(self, delivery: Delivery) -> bool:
        return self._ledger.owns(delivery)

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), max_records, timeout)

    async def ack_and_fetch(
        self, deliveries: Sequence[Delivery], max_records: int, timeout: float
    ) -> list[Delivery]:
        """Acknowledge (committed asynchronously by the next fetch job, first) and fetch.

        While the caller works on a batch, the next one is fetched on the
        consumer's thread (one batch ahead at most), so a busy stream never
        waits for librdkafka. A caller that gives up (timeout, cancellation)
        leaves the fetch job running: its records go to the next call, so
        nothing librdkafka handed out is lost.
        """
        if self._closing:
            return []
        if deliveries and self.group is not None:
            self._inbox.append(("ack", list(deliveries), None))  # the caller keeps its list
        if self._max_records is not None:
            max_records = min(max_records, self._max_records)
        job = self._fetching
        if job is None:
            job = self._fetching = self._thread.run(self._fetch, max_records, timeout)
        if not job.done():
            await asyncio.wait((job,), timeout=timeout + _SLICE)
            if not job.done():
                return []
        self._fetching = None
        if job.cancelled():  # the thread stopped (close)
            return []
        exc = job.exception()
        if exc is not None:
            raise_ours(exc, "fetch")
        got = job.result()
        if got and got[0].position[1] < self._ledger.changed_at:
            # Fetched ahead, then a rewind or revocation came: drop the stale copies
            # (the Consumer only checks what it holds when the epoch changes).
            got = [d for d in got if self.owns(d)]
        ahead = max_records if self.read_ahead is None else min(max_records, self.read_ahead)
        if got and ahead > 0 and not self._closing:
            self._fetching = self._thread.run(self._fetch, ahead, timeout)
        return got

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Hand acknowledgements to the consumer's thread, which commits them asynchronously.

        Returns at once: the next fetch job folds them in and commits first
        thing (at most once a commit interval), or a job of their own does
        within ``_SLICE`` s when no fetch comes. A commit the broker refuses is
        sent again with the next one; what was acknowledged is committed
        synchronously before partitions are revoked and at close. Waiting here
        for the broker's answer would cost a commit round trip per ``prefetch``
        records (half the time of a busy ``async for`` on Tansu).
        """
        if self.group is None or not deliveries or self._closing:
            return
        # A copy: the caller may clear its list once this returns.
        self._inbox.append(("ack", list(deliveries), None))
        if self._kick is None:
            self._kick = self._loop.call_later(_SLICE, self._serve_soon)

    def _kick_deferred(self) -> None:
        """On the loop, asked by the thread: a commit was deferred; it goes with a later
        fetch, or with a job of its own if none comes (a slow loop body)."""
        if self._kick is None and not self._closing:
            self._kick = self._loop.call_later(self._pacer.every, self._serve_soon)

    def _serve_soon(self) -> None:
        """Commit waiting acknowledgements if no fetch job is there to do it."""
        self._kick = None
        if (not self._inbox and not self._deferred) or self._closing:
            return
        job = self._fetching
        if job is None or job.done():
            self._thread.run(self._serve_inbox, True).add_done_callback(quiet)
        else:  # a running fetch serves the inbox within a slice; look again then
            self._kick = self._loop.call_later(_SLICE, self._serve_soon)

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Seek each partition back to its lowest nacked offset: Kafka redelivers from
        there (the records after it in that partition too: at-least-once)."""
        lowest = self._ledger.lowest(deliveries)
        if lowest and not self._closing:
            await self._ask("rewind", lowest, "nack")

    async def _ask(self, kind: str, payload: Any, what: str) -> None:
        done: asyncio.Future[None] = self._loop.create_future()
        self._inbox.append((kind, payload, done))
        # A running fetch serves the inbox within one wait slice; this job makes sure.
        self._thread.run(self._serve_inbox).add_done_callback(quiet)
        await bounded(done, self._commit_timeout, what)

    async def close(self) -> None:
        """Commit what was acknowledged and leave the group (bounded; never raises)."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._on_close(self)
        if self._kick is not None:
            self._kick.cancel()
            self._kick = None
        if self._fetching is not None:  # a fetch ahead ends within one slice; unread
            self._fetching.add_done_callback(quiet)
            self._fetching = None
        try:
            await bounded(self._thread.run(self._close), 20, "closing the consumer")
        except Exception as exc:  # closing never raises past us
            log.warning("closing the confluent consumer: %r", exc)
        finally:
            self._thread.shutdown()
            while self._inbox:
                _, _, fut = self._inbox.popleft()
                if fut is not None and not fut.done():
                    fut.set_exception(BusUnavailable("closed before the commit"))

    @staticmethod
    def _resolve(fut: asyncio.Future[None], exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)

    # -- thread side --------------------------------------------------------------

    def _start(self) -> None:
        c = self.consumer
        c.list_topics(None, self._connect_timeout)  # the broker answers, or this raises
        if self.group is not None:
            self._joining = True
            c.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                        on_lost=self._on_lost)
        else:
            self._unassigned = list(self.topics)
            self._assign_broadcast()

    def _assign_broadcast(self) -> None:
        """Without a group: read every partition of each topic (once its partitions are known)."""
        self._next_lookup = time.monotonic() + 1.0
        start = OFFSET_BEGINNING if self.reset == "earliest" else OFFSET_END
        found, missing = [], []
        for topic in self._unassigned:
            meta = self.consumer.list_topics(topic, self._connect_timeout).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                missing.append(topic)
                continue
            found += [TopicPartition(topic, p, start) for p in sorted(meta.partitions)]
        if found:
            self.consumer.incremental_assign(found)
            self._assigned.update((tp.topic, tp.partition) for tp in found)
        self._unassigned = missing

    def _fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        """One fetch job: serve the inbox, then wait for records in short slices.

        Records are turned into deliveries right after the ``consume()`` that
        returned them, before the inbox is served again, so a rewind served
        later never stamps copies fetched before it as current.
        """
        c = self.consumer
        deadline = time.monotonic() + timeout
        while True:
            if self._inbox or (self._deferred and self._pacer.wait(time.monotonic()) <= 0):
                self._serve_inbox(asynchronous=True, throttle=True)
            if self._unassigned and time.monotonic() >= self._next_lookup:
                self._assign_broadcast()
            msgs = c.consume(max_records, 0)
            if msgs:
                return self._deliveries(msgs)
            left = deadline - time.monotonic()
            if left <= 0 or self._closing:
                return []
            # consume(n, t) waits the whole t unless n records come: wait for one,
            # then take what else is ready, so a lone record is handed out at once.
            msgs = c.consume(1, min(left, _SLICE))
            if msgs:
                if max_records > 1:
                    msgs += c.consume(max_records - 1, 0)
                return self._deliveries(msgs)

    def _deliveries(self, msgs: list[Message]) -> list[Delivery]:
        out: list[Delivery] = []
        append = out.append
        epoch = self.epoch  # after consume(): a revocation inside it is already counted
        track = self._ledger.handed_out if self.group is not None else None
        last_topic: str | None = None
        last_part: int | None = None
        position: tuple[_Key, int] | None = None
        q: deque[int] | None = None
        no_time = TIMESTAMP_NOT_AVAILABLE
        for m in msgs:
            err = m.error()
            if err is not None:
                self._consumer_error(err)
                continue
            topic, part, offset = m.topic(), m.partition(), m.offset()
            if part != last_part or topic != last_topic:  # no tuple per record
                last_topic, last_part = topic, part
                key = (topic or "", part or 0)
                position = (key, epoch)  # one tuple per partition and batch
                if track is not None:  # one ledger call a run; offsets appended inline
                    q = track(key)
            if q is not None:
                q.append(offset)  # type: ignore[arg-type]
            kind, ts = m.timestamp()
            headers = m.headers()
            # Positional: msgspec builds the struct faster than with keywords.
            append(Delivery(
                topic, part, offset, m.value(), m.key(),  # type: ignore[arg-type]
                tuple(headers) if headers else None,  # type: ignore[arg-type]
                position, None, None, 0,
                ts / 1000 if kind != no_time else None))
        return out

    def _consumer_error(self, err: KafkaError) -> None:
        errcode = err.code()
        if errcode in QUIET_CODES or errcode in DOWN_CODES or err.retriable():
            log.debug("consumer: %s", err.str())
        elif errcode == KafkaError._MAX_POLL_EXCEEDED:
            # librdkafka left the group and rejoins on the next poll; the partitions'
            # unacknowledged records go to whoever gets them (at-least-once).
            log.warning("consumer: %s (raise max_poll_interval_ms for slow handlers)",
                        err.str())
        else:
            raise KafkaException(err)

    def _serve_inbox(self, asynchronous: bool = False, throttle: bool = False) -> None:
        """Apply acknowledgements and rewinds in the order they came, then commit.

        With waiters (``nack()``) the commit is synchronous and each waiter
        hears how it went; otherwise it is asynchronous (``_on_commit`` puts
        back what failed, to go with the next commit). ``throttle`` (fetch
        jobs): an asynchronous commit within the pacer's interval of the last
        one is deferred, its offsets kept in the ledger.
        """
        waiters: list[asyncio.Future[None]] = []
        inbox = self._inbox
        while inbox:
            _, payload, fut = inbox.popleft()
            if isinstance(payload, dict):
                self._rewind(payload)
            else:
                self._ledger.ack(payload)
            if fut is not None:
                waiters.append(fut)
        if asynchronous and not waiters:
            now = time.monotonic()
            if throttle and self._pacer.wait(now) > 0:
                if self._ledger.to_commit:
                    self._defer()
                return
            self._pacer.sent(now)
        self._deferred = False
        error: BaseException | None = None
        try:
            self._commit(asynchronous=asynchronous and not waiters)
        except Exception as exc:
            error = to_ours(exc, "commit")
        for fut in waiters:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._resolve, fut, error)

    def _defer(self) -> None:
        """Thread side: offsets wait in the ledger; make sure a commit comes for them
        even if no fetch does (the loop kicks ``_serve_soon``)."""
        if self._deferred:
            return  # asked already: the kick, or the job it starts, is on its way
        self._deferred = True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._kick_deferred)

    def _rewind(self, lowest: dict[_Key, int]) -> None:
        """nack(): seek back; the loop drops what it buffered past the rewind."""
        moved: dict[_Key, int] = {}
        for key, offset in lowest.items():
            if key not in self._assigned:
                continue  # the partition moved on: its new owner reads it
            try:
                self.consumer.seek(TopicPartition(key[0], key[1], offset))
            except KafkaException as exc:
                log.debug("nack: cannot seek %s: %r", key, exc)
                continue
            moved[key] = offset
        self.epoch = self._ledger.rewound(moved)

    def _commit(self, only: set[_Key] | None = None, asynchronous: bool = False) -> None:
        """Commit what the ledger has due (for the partitions in ``only``, if given).

        A synchronous commit also sends again what asynchronous ones sent and the
        broker has not confirmed yet, so after it returns the broker has everything
        acknowledged (before a rebalance, at close). What fails goes back in the
        ledger, to go with the next commit.
        """
        ledger, sent, committed = self._ledger, self._sent, self._committed
        if not asynchronous:
            ledger.restore({key: offset for key, offset in sent.items()
                            if (only is None or key in only)
                            and offset > committed.get(key, -1)})
        offsets = ledger.take(only)
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=tps, asynchronous=True)
                results = tps
            else:
                results = self.consumer.commit(offsets=tps, asynchronous=False) or tps
        except KafkaException as exc:
            if code(exc) not in REBALANCED_CODES:
                ledger.restore(offsets)
                raise
            log.warning("commit skipped after a rebalance (%s); records may be redelivered", exc)
            results = tps
        done = sent if asynchronous else committed
        confirmed: dict[_Key, int] = {}
        error: KafkaError | None = None
        for tp in results:
            key = (tp.topic, tp.partition)
            if tp.error is not None and tp.error.code() not in REBALANCED_CODES:
                ledger.restore({key: tp.offset})
                error = error or tp.error
                continue
            confirmed[key] = done[key] = max(done.get(key, -1), tp.offset)
        ledger.confirm(confirmed)
        if error is not None:
            raise KafkaException(error)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit report (inside consume()): note what the broker confirmed,
        put back what an asynchronous commit lost (never below a confirmed offset)."""
        committed = self._committed
        if err is not None and err.code() in REBALANCED_CODES:
            return  # the partitions moved on: their new owner commits
        for tp in partitions:
            key, offset = (tp.topic, tp.partition), tp.offset
            if offset < 0 or key not in self._assigned:
                continue
            failed = err is not None or (
                tp.error is not None and tp.error.code() not in REBALANCED_CODES)
            if not failed:
                committed[key] = max(committed.get(key, -1), offset)
            elif offset > committed.get(key, -1):
                self._ledger.restore({key: offset})
        if err is not None:
            log.debug("asynchronous commit failed (%s); sent again with the next one",
                      err.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joining = False
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.debug("assigned %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Inside consume(): commit what was acknowledged, then forget the partitions."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._joining = True  # a join follows
        try:
            self._serve_inbox()  # acknowledgements that are here already count
            self._commit(only=revoked)  # what an earlier commit failed to send
        except Exception as exc:  # a callback must not raise into consume()
            log.warning("commit before a rebalance failed (%s); records may be redelivered", exc)
        self._forget(revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group went on without us (session timeout): nothing may be committed."""
        log.warning("lost %d partition(s) to the group; unacknowledged records are redelivered",
                    len(partitions))
        self._forget({(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, keys: set[_Key]) -> None:
        if not keys:
            return
        self.revocations += 1
        for key in keys:
            self._assigned.discard(key)
            self._committed.pop(key, None)
            self._sent.pop(key, None)
        # The ledger marks them stale before the loop can see the new epoch.
        self.epoch = self._ledger.forget(keys)

    def _close(self) -> None:
        try:
            self._serve_inbox()
        except Exception as exc:
            log.warning("final commit failed (%s); records may be redelivered", exc)
        try:
            self._finish_join()
        except Exception as exc:  # leaving matters more
            log.debug("finishing a pending join before close: %r", exc)
        self.consumer.close()  # revokes (committing what is left) and leaves the group

    def _finish_join(self) -> None:
        """Let a pending join complete before leaving (bounded).

        A member that leaves while its JoinGroup is pending can be made leader
        of a generation it never syncs: Tansu then keeps the group rebalancing
        for every later member. Records read here are never handed out or
        committed (this member is leaving; their next owner reads them).
        """
        deadline = time.monotonic() + min(self._session, 10.0) + 1.0
        while self._joining and time.monotonic() < deadline:
            self.consumer.consume(500, _SLICE)

