"""Consumer: ``async for msg in consumer`` with at-least-once acknowledgement.

The consumer pulls a batch from its subscription only when its buffer is
empty, so prefetch is bounded by ``prefetch``; messages are decoded one at a
time as they are handed out, so one bad payload never affects its
neighbours. A message is acknowledged only after the code that received it
finished with it: when the next message is asked for, or at close (unless
the ``async with`` block exits with an exception, in which case the message
in hand is left for redelivery). Acknowledgements are batched.

Payloads that cannot be decoded go to a dead-letter topic
(``<topic>.dlq`` by default) with the reason, and are then acknowledged;
``on_invalid="raise"`` raises :class:`DecodeError` from the iteration instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Generic, Literal

from msgspec.structs import force_setattr
from typing_extensions import TypeVar

from ._client import (
    AsyncResource,
    Backoff,
    Outage,
    check_loop,
    describe,
    open_backend,
    topic_names,
    where_to,
)
from .backends import Backend, Delivery, Subscription
from .backends.base import OffsetReset
from .codec import DEFAULT_MAX_SIZE, MSGPACK_V1, Codec
from .deadletter import dead_letter_record, letter_size_limit
from .errors import (
    AuthenticationError,
    BusClosed,
    BusError,
    BusUnavailable,
    ConfigurationError,
    DecodeError,
    MessageTooLarge,
    TooManyDeliveries,
)
from .message import MLOpsMessage
from .tracing import Tracing, appeared, resolve, trace_context
from .window import ReadWindow, split

__all__ = ["Consumer"]

log = logging.getLogger("mlops_async.consumer")

M = TypeVar("M", default=MLOpsMessage)
_DEFAULT_SCHEMA: Any = MLOpsMessage  # typed Any so that Producer() infers M = MLOpsMessage


_MISSING: Any = object()  # __anext__: the inlined decode did not take the payload


class Consumer(AsyncResource, Generic[M]):
    """Receives messages from topics, alone (every message) or in a ``group`` (shared work).

    ``auto_offset_reset`` says where a consumer with no stored position
    starts: ``"earliest"`` (everything the broker still holds) or ``"latest"``
    (only messages published from now on). By default a new ``group`` starts at
    the earliest, so a stage started after its producer loses nothing; a
    consumer without a group stores no position and starts at the latest (the
    earliest would replay the whole topic at every start). ``peek=True`` looks
    at a topic without touching anything: no group, from the earliest, and a
    record it cannot decode is skipped and counted (``skipped``), never
    dead-lettered (a reader with the wrong schema would otherwise fill the
    topic's dead-letter queue with good records). ``commit="manual"``
    acknowledges only on :meth:`commit`. Keyword arguments the library does
    not know are handed to the broker client.

    ``prefetch_window`` bounds what a member of a ``group`` holds read and not
    yet acknowledged to about that many seconds of its caller's work, measured
    as it goes (at least one message, or one batch, beyond the one in hand; at
    most ``prefetch`` per fetch; a ``get_messages`` poll without ``max_messages``
    takes what is there): a fast stream gets full batches, and the
    members of a group that works slowly share its messages. When the caller
    becomes slower, messages it read and never started go back to the group
    where the broker allows (memory, Redis, PostgreSQL). A consumer without a
    group reads ``prefetch`` at a time: nobody else could take its messages.
    """

    def __init__(
        self,
        url: str | None = None,
        orchestrator: str | None = None,
        *,
        topic: str | Sequence[str] | None = None,
        group: str | None = None,
        auto_offset_reset: OffsetReset | None = None,
        orchestrator_endpoint: str | None = None,
        schema: type[M] = _DEFAULT_SCHEMA,
        max_message_size: int | None = None,
        prefetch: int = 1000,
        prefetch_window: float = 1.0,
        poll_timeout: float = 1.0,
        commit: Literal["auto", "manual"] = "auto",
        commit_interval: float = 1.0,
        on_invalid: Literal["dead_letter", "raise"] = "dead_letter",
        dead_letter_topic: str = "{topic}.dlq",
        max_deliveries: int | None = 5,
        strict: bool = False,
        tracing: bool | None = None,
        peek: bool = False,
        backend: Backend | None = None,
        **client_options: Any,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", None):
            raise ConfigurationError("auto_offset_reset must be 'earliest' or 'latest'")
        if commit not in ("auto", "manual"):
            raise ConfigurationError("commit must be 'auto' or 'manual'")
        if on_invalid not in ("dead_letter", "raise"):
            raise ConfigurationError("on_invalid must be 'dead_letter' or 'raise'")
        if prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        if not prefetch_window >= 0:
            raise ConfigurationError("prefetch_window must be a number of seconds, 0 or more")
        # The seed's spelling: group_id=..., as aiokafka calls it.
        group = group or client_options.pop("group_id", None)
        if peek and group:
            raise ConfigurationError("peek=True reads without a group (and moves none): "
                                     f"drop group={group!r}")
        self._peek = peek
        url, orchestrator, orchestrator_endpoint, client_options = where_to(
            url, orchestrator, orchestrator_endpoint, client_options)
        self._url = url
        self._orchestrator = orchestrator
        self._endpoint = orchestrator_endpoint
        self._client_options = client_options
        self._topics: list[str] = list(dict.fromkeys(topic_names(topic)))
        self.group = group
        self._reset: OffsetReset = auto_offset_reset or (
            "earliest" if group or peek else "latest")
        if max_message_size is None:
            max_message_size = letter_size_limit(schema) or DEFAULT_MAX_SIZE
        self._codec: Codec[M] = Codec(schema, max_size=max_message_size)
        # A consumer's codec limit never changes after this (a Producer's may: see start).
        self._fast_decode, self._fast_limit, self._fast_topic = self._codec.fast_path()
        self._prefetch = prefetch
        self._window = ReadWindow(prefetch_window, prefetch)
        # The caller's pace is measured from when a fetched batch landed (time, received)
        # to when the buffer is empty again; 0.0: no batch landed since the last refill.
        self._landed = 0.0
        self._landed_at = 0
        self._refills = 0
        self._ahead = 1  # what the caller holds beyond what it asks for: 1, a batch, or 0
        # Between refills a timer checks the pace and hands back what the caller cannot
        # start within the window: (time, received, refills) at its last look.
        self._watcher: asyncio.TimerHandle | None = None
        self._watched = (0.0, 0, 0)
        self._release_task: asyncio.Task[None] | None = None
        self._poll_timeout = poll_timeout
        self._auto = commit == "auto"
        self._commit_interval = commit_interval
        self._on_invalid = on_invalid
        self._dlq = dead_letter_topic
        self._max_deliveries = max_deliveries
        # Handed out too often (where the broker counts): dead-lettered before
        # anything else is handed out.
        self._poison: list[Delivery] = []
        self.strict = strict
        self._backend = backend
        self._tracing = tracing  # None: on when OpenTelemetry is configured (mlops_async.tracing)
        self._trace: Tracing | None = None

        self._sub: Subscription | None = None
        self._epoch = 0
        self._buf: deque[Delivery] = deque()
        # Handed out, not yet finished; keyed by identity so one can be acked alone.
        self._inflight: dict[int, Delivery] = {}
        # The one ``async for`` handed out last with auto commit: a slot, not a dict
        # entry, on the per-message path. Finished when the next one is asked for.
        self._held: Delivery | None = None
        # The batch ``batches()`` handed out last with auto commit: one list, not a dict
        # entry per message. Finished when the next batch is asked for.
        self._batch: list[Delivery] = []
        self._finished: list[Delivery] = []  # finished, not yet acknowledged
        self._last_ack = 0.0
        self._started = False
        self._closed = False
        self._lock = asyncio.Lock()  # one fetch/ack/resubscribe at a time
        self._topics_set: asyncio.Event | None = None
        self._outage = Outage("consumer")
        self._backoff = Backoff()
        # Sends acknowledgements that would otherwise wait while the caller is busy.
        self._ticker: asyncio.TimerHandle | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it started on
        self.received = 0
        self.dead_lettered = 0
        self.tombstones = 0
        self.skipped = 0  # peek: records it could not decode (never dead-lettered)

    # -- life cycle ---------------------------------------------------------

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "not started"
        extra = ", peek" if self._peek else f", group={self.group!r}" if self.group else ""
        return describe(self, self._url, self._orchestrator, self._endpoint, self._backend,
                        self._topics, extra, state)

    @property
    def backend(self) -> Backend | None:
        return self._backend

    @property
    def connected(self) -> bool:
        """True while subscribed and the broker answers (no outage since the last fetch)."""
        return self._sub is not None and not self._outage.active and not self._closed

    @property
    def prefetch_window(self) -> float:
        """Seconds of the caller's work the consumer holds read ahead (see the class doc)."""
        return self._window.seconds

    @property
    def commit_interval(self) -> float:
        """Longest time a processed message waits for its acknowledgement to be sent."""
        return self._commit_interval

    async def start(self) -> None:
        """Connect and join the group. Lenient mode tolerates an absent broker."""
        if self._closed:
            raise BusClosed("consumer is closed")
        check_loop(self, self._loop)
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._last_ack = time.monotonic()
        self._tick()
        self._watch()
        try:
            if self._backend is None:
                self._backend = await open_backend(
                    self._url, self._orchestrator, self._endpoint, self._client_options
                )
            self._trace = resolve(self._tracing, self._backend.scheme)
            await self._backend.connect()
            if self._topics:
                await self._open_subscription()
        except AuthenticationError as exc:
            # Not an outage: no retry can help, in strict or lenient mode.
            log.error("consumer: %s", exc)
            self._started = False
            self._stop_ticker()
            if self._backend is not None:
                await self._backend.close()
            raise
        except BusUnavailable as exc:
            if self.strict:
                self._started = False  # a later start() tries again
                self._stop_ticker()
                raise
            self._outage.down(exc, asyncio.get_running_loop().time())
        except BaseException:
            # Anything else (a missing extra, a bad option, a cancellation): not started,
            # so a later start() tries again from scratch.
            self._started = False
            self._stop_ticker()
            raise

    async def close(self, *, processed: bool = True) -> None:
        """Acknowledge what was processed, leave the group, release the connection.

        ``processed=False`` leaves the message(s) in hand unacknowledged, for
        redelivery. Safe to call twice.
        """
        if self._closed:
            return
        check_loop(self, self._loop)
        self._closed = True
        if self._trace is not None:
            self._trace.end()  # the last `async for` message's span
        self._stop_ticker()
        if self._ack_task is not None:
            await asyncio.gather(self._ack_task, return_exceptions=True)
        if self._release_task is not None:
            await asyncio.gather(self._release_task, return_exceptions=True)
        try:
            if processed and self._auto:
                self._finish_in_hand()
            if self._sub is not None and self._finished:
                try:
                    await self._sub.ack(self._finished)
                    self._finished.clear()
                except BusUnavailable as exc:
                    log.warning(
                        "consumer closing: %d processed message(s) could not be acknowledged "
                        "and will be delivered again (%s)",
                        len(self._finished),
                        exc,
                    )
        finally:
            self._buf.clear()
            sub, self._sub = self._sub, None
            try:
                if sub is not None:
                    await sub.close()
            finally:
                if self._backend is not None:
                    await self._backend.close()
                if self._topics_set is not None:
                    self._topics_set.set()  # wake an iteration waiting for topics

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(processed=exc is None)

    # -- topics -------------------------------------------------------------

    def get_subscriptions(self) -> list[str]:
        """The topics currently subscribed to (an empty list when none)."""
        return list(self._topics)

    async def subscribe(self, topic: str | Sequence[str]) -> None:
        """Add one topic or a list of topics to the subscription."""
        added = [t for t in topic_names(topic) if t not in self._topics]
        if not added:
            return
        self._topics.extend(added)
        if self._started and not self._closed:
            await self._resubscribe()
        if self._topics_set is not None:
            self._topics_set.set()

    async def unsubscribe(self) -> None:
        """Remove every topic; iteration then waits and ``get_messages`` returns []."""
        self._topics.clear()
        if self._started and not self._closed:
            await self._resubscribe()
        if self._topics_set is not None:
            self._topics_set.clear()

    async def _resubscribe(self) -> None:
        async with self._lock:
            if self._auto:
                self._finish_in_hand()
            await self._ack_finished()
            # Buffered, never handed out: the group hands them out again.
            self._buf.clear()
            sub, self._sub = self._sub, None
            if sub is not None:
                await sub.close()
            if self._topics:
                try:
                    await self._open_subscription()
                except BusUnavailable as exc:
                    if self.strict:
                        raise
                    self._outage.down(exc, asyncio.get_running_loop().time())

    async def _open_subscription(self) -> None:
        assert self._backend is not None
        self._epoch = 0
        self._sub = await self._backend.subscribe(
            list(self._topics),
            group=self.group,
            auto_offset_reset=self._reset,
        )

    # -- receiving ----------------------------------------------------------

    def __aiter__(self) -> Consumer[M]:
        return self

    async def __anext__(self) -> M:
        if self._trace is not None:
            return await self._traced_next(self._trace)
        auto = self._auto
        if auto:
            held = self._held
            finished = self._finished
            if held is not None:
                finished.append(held)
                self._held = None
            if self._inflight or self._batch:
                self._finish_in_hand()
            # The clock is read for the first finished message and then every 64th
            # only: the bound stays commit_interval plus 64 messages' time (the
            # ticker covers a caller that yields).
            # With the buffer empty the refill below carries them (one round trip with
            # the next read where the backend can: Redis writes XACK and XREADGROUP together).
            n = len(finished)
            if self._buf and (n >= self._prefetch or (
                n & 63 == 1 and time.monotonic() - self._last_ack > self._commit_interval
            )):
                async with self._lock:
                    await self._ack_finished()
        # The common case inline (one coroutine less per message): a buffered,
        # valid message and no rebalance since the last one.
        buf = self._buf
        sub = self._sub
        if buf and sub is not None and sub.epoch == self._epoch:
            d = buf.popleft()
            value: Any = d.value
            msg: Any = _MISSING
            try:
                # Codec.fast_path inlined: no call per message. Anything it cannot take,
                # or that fails in it, goes through Codec.decode, the decode boundary.
                if value[0] == MSGPACK_V1 and len(value) <= self._fast_limit:
                    msg = self._fast_decode(value[1:])
            except Exception:
                pass  # Codec.decode says what is wrong
            if msg is _MISSING:
                try:
                    msg = self._codec.decode(value, topic=d.topic)
                except (DecodeError, MessageTooLarge) as exc:
                    await self._invalid(d, exc)
                    return (await self._next())[0]
            elif self._fast_topic:
                force_setattr(msg, "topic", d.topic)
            if auto:
                self._held = d
            else:
                self._inflight[id(d)] = d
            self.received += 1
            return msg  # type: ignore[no-any-return]
        return (await self._next())[0]

    async def _traced_next(self, trace: Tracing) -> M:
        """``__anext__`` with tracing on: end the last message's span, open this one's.

        Its span stays current in the caller's context while the loop body runs.
        """
        trace.end()
        self._trace = None  # the plain path below, once
        try:
            msg = await self.__anext__()
        finally:
            self._trace = trace
        d = self.envelope
        if d is not None:
            trace.begin(d, msg)
        return msg

    def trace(self, delivery: Delivery | None = None, msg: Any = None
              ) -> AbstractContextManager[Any]:
        """``with consumer.trace(d, msg): ...``: run a block in ``d``'s CONSUMER span.

        For messages taken with :meth:`receive`, :meth:`get_messages` or
        :meth:`batches` (``async for`` opens its spans itself). ``delivery``
        defaults to :attr:`envelope`. Does nothing when tracing is off.
        """
        return trace_context(self._trace, delivery or self.envelope, msg)

    async def batches(
        self, max_messages: int = 256, max_wait: float = 0.05
    ) -> AsyncIterator[list[M]]:
        """``async for batch in consumer.batches(...)``: non-empty lists of messages.

        A batch holds up to ``max_messages``: what is buffered at once, or what
        arrives within ``max_wait`` seconds of its first message. At-least-once
        as for ``async for msg in consumer``: a batch is acknowledged once the
        loop body that received it finished (the next batch is asked for, or the
        consumer closes); undecodable payloads go to the dead letters as usual.
        """
        if max_messages < 1 or max_wait < 0:
            raise ConfigurationError("batches() needs max_messages >= 1 and max_wait >= 0")
        while True:
            if self._auto:
                self._finish_in_hand()
                if self._ack_due():
                    async with self._lock:
                        await self._ack_finished()
            batch, _ = await self._take(max_messages, max_wait, wait=True, hold=self._auto)
            if not batch:
                return  # closed
            yield batch

    async def receive_many(
        self, max_messages: int, max_wait: float
    ) -> list[tuple[M, Delivery]]:
        """Up to ``max_messages`` messages with their deliveries, for code that acks itself.

        Waits for the first message, then at most ``max_wait`` seconds more for
        the batch to fill. Use with ``commit="manual"`` and :meth:`ack`.
        """
        msgs, deliveries = await self._take(max_messages, max_wait, wait=True)
        return list(zip(msgs, deliveries, strict=True))

    async def receive_batch(
        self, max_messages: int, max_wait: float, *, room: int | None = None
    ) -> tuple[list[M], list[Delivery]]:
        """:meth:`receive_many` as two lists, messages and their deliveries (no pairs built).

        ``room``: for code that runs messages on concurrent workers and times them
        itself (the consumer cannot): how many its workers can start within the read
        window; a fetch then reads that many, not what the consumer's own measure says.
        """
        return await self._take(max_messages, max_wait, wait=True, room=room)

    async def receive_deliveries(self, max_messages: int, max_wait: float, *,
                                 room: int | None = None) -> list[Delivery]:
        """:meth:`receive_batch` without decoding: deliveries in hand, for code that
        decodes each one itself when it gets to it (:meth:`decode`, :meth:`invalid`).

        Decoding late keeps a message's decode, handling and re-encode close
        together (the engine's workers), and holds bytes rather than objects.
        ``room`` as for :meth:`receive_batch`.
        """
        return (await self._take(max_messages, max_wait, wait=True, decode=False,
                                 room=room))[1]

    def decode(self, d: Delivery) -> M:
        """The message in ``d``; raises :class:`DecodeError` or :class:`MessageTooLarge`
        (hand those to :meth:`invalid`)."""
        return self._codec.decode(d.value, topic=d.topic)

    async def invalid(self, d: Delivery, exc: DecodeError | MessageTooLarge) -> None:
        """Deal with a delivery :meth:`decode` refused, as the consumer does itself.

        A null value (tombstone) is skipped, counted and acknowledged; anything
        else is dead-lettered, or with ``on_invalid="raise"`` raised again naming
        where it was, ``exc.delivery`` set, to be acknowledged once dealt with.
        """
        await self._invalid(d, exc)

    async def _take(self, n: int, max_wait: float, *, wait: bool, decode: bool = True,
                    hold: bool = False, room: int | None = None
                    ) -> tuple[list[M], list[Delivery]]:
        # Messages count as in hand only once the batch is returned: until then a
        # cancellation or a close puts them back, so none is acknowledged unseen.
        msgs: list[M] = []
        deliveries: list[Delivery] = []
        try:
            await self._collect(msgs, deliveries, n, max_wait, wait, decode, room)
        except BaseException:
            self._buf.extendleft(reversed(deliveries))
            raise
        self._unhold()
        if hold and not self._batch:
            self._batch = deliveries  # auto commit: finished whole at the next batch
        else:
            self._inflight.update(zip(map(id, deliveries), deliveries, strict=True))
        self.received += len(deliveries)
        return msgs, deliveries

    async def _collect(self, msgs: list[M], deliveries: list[Delivery], n: int,
                       max_wait: float, wait: bool, decode_now: bool = True,
                       room: int | None = None) -> None:
        decode, decode_many = self._codec.decode, self._codec.decode_many
        add_msg, add_delivery = msgs.append, deliveries.append
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            sub = self._sub
            if sub is not None and sub.epoch != self._epoch:
                self._drop_revoked()
            if self._poison:
                await self._dead_letter_poison()
            buf = self._buf
            popleft = buf.popleft
            k = min(n - len(deliveries), len(buf))
            if not decode_now:  # receive_deliveries: the caller decodes
                deliveries.extend([popleft() for _ in range(k)])
                k = 0
            elif k > 1:  # one pass for the lot; a chunk with a bad one goes one by one below
                chunk = [popleft() for _ in range(k)]
                got = decode_many([d.value for d in chunk], [d.topic for d in chunk])
                if got is None:
                    buf.extendleft(reversed(chunk))
                else:
                    msgs += got
                    deliveries += chunk
                    k = 0
            for _ in range(k):
                d = popleft()
                try:
                    msg = decode(d.value, topic=d.topic)
                except (DecodeError, MessageTooLarge) as exc:
                    if deliveries and self._on_invalid == "raise":
                        buf.appendleft(d)  # raised by the next call: this batch goes out first
                        return
                    await self._invalid(d, exc)
                    break  # the buffer may have changed meanwhile: look again
                add_msg(msg)
                add_delivery(d)
            else:
                if len(deliveries) >= n or self._closed:
                    return
                # A batch consumer holds one batch ahead; a caller that says its room
                # holds what it said.
                asked, ahead = n - len(deliveries), (n if room is None else 0)
                if deliveries:
                    if deadline is None:
                        deadline = loop.time() + max_wait
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return
                    await self._refill(wait_for_topics=False, timeout=remaining,
                                       asked=asked, ahead=ahead, room=room)
                else:
                    await self._refill(wait_for_topics=wait, asked=asked, ahead=ahead,
                                       room=room)

    @property
    def envelope(self) -> Delivery | None:
        """Where the message most recently handed out came from: topic, partition,
        offset, key, headers, ``broker_time()``; None when no message is in hand.

        Read from what the consumer already keeps, so it costs nothing unless asked.
        """
        if self._held is not None:
            return self._held
        if self._batch:
            return self._batch[-1]
        inflight = self._inflight
        return next(reversed(inflight.values())) if inflight else None

    @property
    def envelopes(self) -> list[Delivery]:
        """The envelopes of every message in hand, in the order they were handed out
        (the list ``get_messages`` returned, or the current batch)."""
        held = [] if self._held is None else [self._held]
        return [*self._inflight.values(), *self._batch, *held]

    async def receive(self) -> tuple[M, Delivery]:
        """The next message and its delivery, for code that acknowledges each one itself.

        Use with ``commit="manual"`` and :meth:`ack`: nothing is acknowledged
        until ``ack`` is called for it, whatever order messages finish in.
        With ``on_invalid="raise"``, the :class:`DecodeError` carries the
        delivery as ``exc.delivery``, to be acknowledged once dealt with.
        """
        return await self._next()

    def ack_nowait(self, *deliveries: Delivery) -> None:
        """Mark ``deliveries`` processed; they go to the broker with the next batch of acks."""
        inflight, held = self._inflight, self._held
        for d in deliveries:
            if d is held:
                self._held = held = None
            elif inflight.pop(id(d), None) is None and self._batch:
                self._unbatch(d)
        self._finished.extend(deliveries)

    async def nack(self, *deliveries: Delivery) -> None:
        """Hand deliveries (from :meth:`receive`, or :attr:`envelope`) back for prompt
        redelivery instead of acknowledging them (volley's ``on_fail``).

        Redis and PostgreSQL hand back just those; the memory bus puts them first in
        line; Kafka seeks their partition back, so the records after them in that
        partition come again too. Raises :class:`NotSupported` on a backend that cannot.
        """
        for d in deliveries:
            self._release(d)
        if self._sub is not None and deliveries:
            async with self._lock:  # never while a fetch is in flight (Kafka seeks)
                if self._sub is not None:
                    await self._sub.nack(deliveries)

    async def ack(self, *deliveries: Delivery) -> None:
        """Mark these deliveries (from :meth:`receive`) as processed.

        Acknowledgements go to the broker in batches: with the next fetch, once
        ``prefetch`` are waiting, or after ``commit_interval`` seconds, and at
        close. This never waits for a fetch in progress.
        """
        for d in deliveries:
            self._release(d)
        self._finished.extend(deliveries)
        if len(self._finished) >= self._prefetch or (
            time.monotonic() - self._last_ack > self._commit_interval
        ):
            await self._ack_finished()

    async def _next(self) -> tuple[M, Delivery]:
        inflight = self._inflight
        decode = self._codec.decode
        while True:
            sub = self._sub
            if sub is not None and sub.epoch != self._epoch:
                self._drop_revoked()
            if self._poison:
                await self._dead_letter_poison()
            buf = self._buf
            while buf:
                d = buf.popleft()
                try:
                    msg = decode(d.value, topic=d.topic)
                except (DecodeError, MessageTooLarge) as exc:
                    await self._invalid(d, exc)
                    continue
                self._unhold()
                inflight[id(d)] = d
                self.received += 1
                return msg, d
            if self._closed:
                raise StopAsyncIteration
            await self._refill(wait_for_topics=True)

    async def get_messages(
        self,
        filter: Callable[[M], bool] | None = None,
        *,
        max_messages: int | None = None,
        timeout: float | None = None,
    ) -> list[M]:
        """One poll: the buffered or newly fetched messages that pass ``filter``.

        Returns [] when nothing arrived within ``timeout`` (default
        ``poll_timeout``), when nothing is subscribed, and (lenient mode) when
        the broker is unavailable, then only after ``timeout`` (it retries
        within it), so a polling loop never spins. Messages rejected by ``filter`` are
        acknowledged; the returned ones are acknowledged at the next call or at
        close (auto commit).
        """
        if self._closed:
            raise BusClosed("consumer is closed")
        if not self._started:
            await self.start()
        if self._auto:
            self._finish_in_hand()
        if self._buf and self._ack_due():
            # Messages still buffered, so no fetch (which would carry the acks)
            # is coming: acknowledge what was processed now, within commit_interval.
            async with self._lock:
                await self._ack_finished()
        if not self._buf:
            # No max_messages: a poll takes what is there (up to prefetch), as it always
            # did; with one, the read window sizes the fetch beyond it.
            await self._refill(wait_for_topics=False, timeout=timeout,
                               asked=max_messages or self._prefetch)
        if self._sub is not None and self._sub.epoch != self._epoch:
            self._drop_revoked()
        if self._poison:
            await self._dead_letter_poison()
        limit = max_messages or self._prefetch
        self._unhold()  # auto commit finished it above; manual never holds
        out: list[M] = []
        buf = self._buf
        while buf and len(out) < limit:
            d = buf.popleft()
            try:
                msg = self._codec.decode(d.value, topic=d.topic)
            except (DecodeError, MessageTooLarge) as exc:
                await self._invalid(d, exc)
                continue
            self.received += 1
            if filter is None or filter(msg):
                out.append(msg)
                self._inflight[id(d)] = d
            else:
                self._finished.append(d)
        return out

    async def commit(self) -> None:
        """Acknowledge every message handed out so far (for ``commit="manual"``)."""
        self._finish_in_hand()
        async with self._lock:
            await self._ack_finished()

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "dead_lettered": self.dead_lettered,
            "tombstones": self.tombstones,
            "buffered": len(self._buf),
            "pace": self._window.pace,
            "unacknowledged": len(self._inflight) + len(self._finished) + len(self._batch)
            + (self._held is not None),
            "outage": self._outage.active,
        }

    # -- internals ----------------------------------------------------------

    def _finish_in_hand(self) -> None:
        """Auto commit: everything handed out counts as processed (the caller moved on)."""
        if self._inflight:
            self._finished.extend(self._inflight.values())
            self._inflight.clear()
        if self._batch:
            self._finished.extend(self._batch)
            self._batch = []
        if self._held is not None:
            self._finished.append(self._held)
            self._held = None

    def _unhold(self) -> None:
        """Before a dict entry is added: the held one joins the dict first (order kept)."""
        held = self._held
        if held is not None:
            self._inflight[id(held)] = held
            self._held = None

    def _release(self, d: Delivery) -> None:
        """``d`` is no longer in hand (acked or nacked by the caller)."""
        if self._held is d:
            self._held = None
        elif self._inflight.pop(id(d), None) is None and self._batch:
            self._unbatch(d)

    def _unbatch(self, d: Delivery) -> None:
        """Take ``d`` out of the batch in hand (acked or nacked on its own: rare)."""
        for i, x in enumerate(self._batch):
            if x is d:
                del self._batch[i]
                return

    def _drop_revoked(self) -> None:
        sub = self._sub
        assert sub is not None
        self._epoch = sub.epoch
        kept = [d for d in self._buf if sub.owns(d)]
        if len(kept) != len(self._buf):
            log.info(
                "rebalance: dropped %d buffered message(s) now owned by another member",
                len(self._buf) - len(kept),
            )
            self._buf = deque(kept)

    def _tick(self) -> None:
        """Every ``commit_interval``: send acknowledgements that are waiting.

        Without it, a caller busy with a slow message would hold back the acks
        of the messages it already finished until its next call.
        """
        self._ticker = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._finished and self._sub is not None and (
            self._ack_task is None or self._ack_task.done()
        ):
            self._ack_task = loop.create_task(self._ack_in_background(),
                                              name="mlops_async.consumer.acks")
        self._ticker = loop.call_later(self._commit_interval, self._tick)

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    # -- the read window ------------------------------------------------------

    def _in_hand(self) -> int:
        return len(self._inflight) + len(self._batch) + (self._held is not None)

    def _fetch_size(self, sub: Subscription, asked: int, ahead: int, room: int | None) -> int:
        """How many records the next fetch asks for; sets what the backend may read ahead.

        Called with the buffer empty, once per fetch: the time since the last batch
        landed, over the messages handed out since, is the caller's pace.
        """
        if self.group is None:
            # Alone (broadcast): nobody else could take what it holds, so a full fetch.
            sub.read_ahead = None
            return self._prefetch
        self._ahead = ahead if room is None else 0
        if self._landed:
            handed = self.received - self._landed_at
            if handed > 0:
                self._window.observe(time.monotonic() - self._landed, handed)
            self._landed = 0.0  # time spent waiting for the broker is not the caller's
        if room is None:
            want, read_ahead = self._window.fetch(self._in_hand(), asked + ahead)
        else:
            want, read_ahead = split(room, asked, self._prefetch)
        sub.read_ahead = read_ahead
        return want

    def _watch(self) -> None:
        """Between fetches: if the caller went slower than the window allows for what
        is buffered, hand what it cannot start within the window back to the group.

        A timer rather than a clock read per message, so a fast stream pays nothing.
        """
        self._watcher = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now, received, refills = time.monotonic(), self.received, self._refills
        since, seen, refilled = self._watched
        if self._buf and refills == refilled and since:
            # Buffered all along since the last look: the caller set the pace alone.
            self._window.observe(now - since, received - seen)
            sub = self._sub
            in_hand = self._in_hand()
            keep = max(self._ahead, 1 if in_hand == 0 else 0,
                       self._window.room(in_hand))
            excess = len(self._buf) - keep
            if (excess > 0 and sub is not None and sub.releases
                    and (self._release_task is None or self._release_task.done())):
                back = [self._buf.pop() for _ in range(excess)]
                back.reverse()
                self._release_task = loop.create_task(
                    self._release_unstarted(sub, back), name="mlops_async.consumer.release")
        self._watched = (now, received, refills)
        self._watcher = loop.call_later(max(0.05, self._window.seconds / 2), self._watch)

    async def _release_unstarted(self, sub: Subscription, back: list[Delivery]) -> None:
        try:
            async with self._lock:
                if self._sub is not sub:
                    return  # resubscribed or closed meanwhile: the group has them again
                await sub.release(back)
            log.debug("read window: handed %d unstarted message(s) back to the group",
                      len(back))
        except Exception as exc:  # still ours: handed out here later instead
            log.debug("read window: could not hand messages back: %r", exc)
            if self._sub is sub:
                self._buf.extend(back)

    async def _ack_in_background(self) -> None:
        try:
            await self._ack_finished()
        except BusError as exc:  # kept in _finished: sent with a later batch
            log.debug("consumer: acknowledgements deferred: %s", exc)

    def _ack_due(self) -> bool:
        return bool(self._finished) and (
            len(self._finished) >= self._prefetch
            or time.monotonic() - self._last_ack > self._commit_interval
        )

    async def _ack_finished(self) -> None:
        if not self._finished or self._sub is None:
            return
        check_loop(self, self._loop)
        batch, self._finished = self._finished, []
        try:
            await self._sub.ack(batch)
        except BaseException:
            self._finished[:0] = batch  # try again with the next batch
            raise
        self._last_ack = time.monotonic()

    async def _wait_for_topics(self) -> None:
        if self._topics_set is None:
            self._topics_set = asyncio.Event()
        if self._topics:
            self._topics_set.set()
        await self._topics_set.wait()

    async def _refill(self, *, wait_for_topics: bool, timeout: float | None = None,
                      asked: int = 1, ahead: int = 1, room: int | None = None) -> None:
        """Fetch into the empty buffer: what the read window allows, at least ``asked``
        plus ``ahead`` (or, given ``room`` by a caller that paces itself, that many)."""
        if not self._started:
            await self.start()
        check_loop(self, self._loop)
        loop = asyncio.get_running_loop()
        start = loop.time()
        if not self._topics:
            if wait_for_topics:
                await self._wait_for_topics()
            return
        async with self._lock:
            if self._closed:
                return
            try:
                if self._sub is None:
                    assert self._backend is not None
                    await self._backend.connect()
                    await self._open_subscription()
                    assert self._sub is not None
                sub = self._sub
                wait = self._poll_timeout if timeout is None else timeout
                want = self._fetch_size(sub, asked, ahead, room)
                due = self._finished and (
                    sub.cheap_ack
                    or len(self._finished) >= self._prefetch
                    or time.monotonic() - self._last_ack > self._commit_interval
                )
                finished: list[Delivery] = []
                if due:
                    finished, self._finished = self._finished, []
                task = asyncio.current_task()
                cancels = task.cancelling() if task is not None else 0
                try:
                    # One call, so a backend can send the acks with the next read.
                    batch = await sub.ack_and_fetch(finished, want, wait)
                except BaseException:
                    self._finished[:0] = finished  # not acknowledged: try again later
                    raise
                if finished:
                    self._last_ack = time.monotonic()
                limit = self._max_deliveries
                if sub.counts_deliveries and limit is not None and batch:
                    poison = [d for d in batch if d.attempts > limit]
                    if poison:
                        self._poison += poison
                        batch = [d for d in batch if d.attempts <= limit]
                if task is not None and task.cancelling() > cancels:
                    # The driver swallowed a cancellation (CPython 3.11 wait_for):
                    # keep the batch for the next call and let the cancellation through.
                    self._buf.extend(batch)
                    raise asyncio.CancelledError
            except BusUnavailable as exc:
                if self.strict:
                    raise
                self._outage.down(exc, loop.time())
                delay = self._backoff.next_delay()
            else:
                if self._outage.active:
                    self._outage.up(loop.time())
                self._backoff.reset()
                self._buf.extend(batch)
                if self._trace is None and self._tracing is None:  # once per batch
                    assert self._backend is not None
                    self._trace = appeared(None, self._backend.scheme, "consumer")
                if batch:
                    self._refills += 1
                    self._landed, self._landed_at = time.monotonic(), self.received
                return
        if wait_for_topics:  # iteration retries
            await asyncio.sleep(delay)
            return
        # A poll waits out its timeout, retrying within it: returning [] at once while
        # the broker is away would make a polling loop spin a core.
        end = start + (self._poll_timeout if timeout is None else timeout)
        if end - loop.time() > 0:
            await asyncio.sleep(min(delay, end - loop.time()))
            if end - loop.time() > 0 and not self._closed:
                await self._refill(wait_for_topics=False, timeout=end - loop.time(),
                                   asked=asked, ahead=ahead, room=room)

    async def _invalid(self, d: Delivery, exc: DecodeError | MessageTooLarge) -> None:
        """Deal with a delivery the codec refused: skip a tombstone, dead-letter the rest."""
        if d.value is None and d.fault is None:
            # A null value (Kafka tombstone: compaction, deletes) carries no message.
            self.tombstones += 1
            self._finished.append(d)
            if self.tombstones == 1:
                log.info("skipping null-value records (tombstones), first at %s", d.where())
            return
        where = d.where()
        if d.fault is not None:
            exc = DecodeError(d.fault, d.value or b"", where)
        elif isinstance(exc, DecodeError):
            exc = DecodeError(exc.reason, exc.payload, where)
        else:
            exc = MessageTooLarge(exc.size, exc.limit, where)
        if self._on_invalid == "raise":
            # In hand like any message: acknowledged once the caller moves on
            # (auto commit) or acks it (manual), never before it saw the error.
            self._unhold()
            self._inflight[id(d)] = d
            exc.delivery = d
            raise exc
        if self._peek:
            self.skipped += 1
            self._finished.append(d)
            log.info("peek: skipped %s (not dead-lettered: a peek writes nothing): %s", where, exc)
            return
        try:
            await self._to_dead_letters(d, exc)
        except BaseException:
            self._buf.appendleft(d)  # not acknowledged: met again next time
            raise

    async def _dead_letter_poison(self) -> None:
        poison, self._poison = self._poison, []
        for i, d in enumerate(poison):
            exc = TooManyDeliveries(
                f"delivered {d.attempts} times, more than max_deliveries={self._max_deliveries}, "
                f"and never acknowledged at {d.where()}"
            )
            try:
                await self._to_dead_letters(d, exc, attempts=d.attempts)
            except BaseException:
                self._poison[:0] = poison[i:]  # not acknowledged: met again next time
                raise

    async def _to_dead_letters(self, d: Delivery, exc: BaseException, attempts: int = 1) -> None:
        """Publish ``d`` with the reason to its dead-letter topic; then it may be acknowledged."""
        where = d.where()
        dlq = self._dlq.format(topic=d.topic)
        record = dead_letter_record(dlq, d, exc, attempts=attempts)
        assert self._backend is not None
        while True:
            try:
                await self._backend.publish([record])
                break
            except BusUnavailable as pub_exc:
                if self.strict:
                    raise  # not acknowledged: the caller puts it back
                self._outage.down(pub_exc, asyncio.get_running_loop().time())
                await asyncio.sleep(self._backoff.next_delay())
        # Acknowledged only now that its dead letter is safely on the broker.
        self._finished.append(d)
        self.dead_lettered += 1
        log.warning("dead-lettered %s to %s: %s", where, dlq, exc)
