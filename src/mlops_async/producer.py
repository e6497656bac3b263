"""Producer: ``await producer.send(msg)`` from any number of tasks, batched to the broker.

``send`` encodes the message and puts it in a bounded buffer; one sender task
cuts the buffer into batches (by count and bytes, after an optional linger)
and publishes them. The buffer counts a record until the broker confirmed it,
so memory stays bounded whatever the broker does; when it is full, ``send``
waits (backpressure) instead of dropping anything.

When the broker is away the sender keeps the batch and retries with backoff.
By default ``send`` keeps queueing (the orchestration seed's rule: an outage
must not crash the pipeline), one warning is logged per outage, and waits
are bounded: ``flush()`` and ``send(flush=True)`` return after
``flush_timeout`` with the messages still queued, and ``close()`` gives up
after ``flush_timeout`` when the broker is away (``close_timeout`` when it is
up). ``strict=True`` makes ``send`` and ``flush`` raise
:class:`BusUnavailable` instead. Records the broker refuses for good are
logged and reported by the next ``flush()``.

With ``spool="dir"`` nothing accepted is lost even if the process dies: while
the broker is away (and for whatever is still unsent at close), records are
written to a local outbox (:mod:`mlops_async.spool`) before ``send`` returns,
and delivered first, in order, by the next producer with that spool. While
the broker is up, the spool is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic

from typing_extensions import TypeVar

from ._client import (
    AsyncResource,
    Backoff,
    Outage,
    check_loop,
    describe,
    open_backend,
    where_to,
)
from .backends import Backend, Record
from .codec import DEFAULT_MAX_SIZE, Codec, Format
from .errors import (
    AuthenticationError,
    BusClosed,
    BusError,
    BusUnavailable,
    ConfigurationError,
    MessageTooLarge,
    PublishError,
    SendTimeout,
)
from .message import MLOpsMessage
from .spool import Spool
from .status import TaskStatus, Webhook, task_status
from .tracing import Tracing, appeared, resolve

__all__ = ["Producer"]

log = logging.getLogger("mlops_async.producer")

M = TypeVar("M", default=MLOpsMessage)
_DEFAULT_SCHEMA: Any = MLOpsMessage  # typed Any so that Producer() infers M = MLOpsMessage

HeadersIn = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None


def _headers(headers: HeadersIn) -> tuple[tuple[str, bytes], ...] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((k, v.encode() if isinstance(v, str) else bytes(v)) for k, v in items)


def _topics(topic: str | Sequence[str] | None) -> tuple[str, ...]:
    if topic is None:
        return ()
    if isinstance(topic, str):
        return (topic,)
    return tuple(topic)


class Producer(AsyncResource, Generic[M]):
    """Publishes messages to one or more topics.

    ``url`` picks the broker (``memory://``, ``kafka://host:9092``,
    ``redis://host:6379/0``); the seed's ``orchestrator``/``orchestrator_endpoint``
    spelling works too. Keyword arguments the library does not know are handed
    to the broker client (e.g. ``acks``, ``compression_type``).

    ``schema`` messages are checked at send as far as is cheap: msgspec encodes
    whatever values a Struct holds, so by default (``validate=None``) an array
    whose dtype is not the one its field declares raises :class:`EncodeError`
    here rather than being dead-lettered by the consumer (schemas without such
    fields pay nothing). ``validate=True`` decodes every message as a consumer
    will (every field checked, at the cost of a decode); ``False`` checks nothing.
    """

    def __init__(
        self,
        url: str | None = None,
        orchestrator: str | None = None,
        *,
        topic: str | Sequence[str] | None = None,
        orchestrator_endpoint: str | None = None,
        schema: type[M] = _DEFAULT_SCHEMA,
        format: Format = "msgpack",
        max_message_size: int = DEFAULT_MAX_SIZE,
        batch_size: int = 1000,
        batch_bytes: int = 1024 * 1024,
        linger: float = 0.0,
        max_in_flight: int = 4,
        buffer_size: int = 10_000,
        buffer_bytes: int = 32 * 1024 * 1024,
        send_timeout: float | None = None,
        flush_timeout: float = 5.0,
        close_timeout: float = 30.0,
        spool: str | Path | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        strict: bool = False,
        tracing: bool | None = None,
        validate: bool | None = None,
        backend: Backend | None = None,
        **client_options: Any,
    ) -> None:
        if batch_size < 1 or buffer_size < batch_size:
            raise ValueError("need 1 <= batch_size <= buffer_size")
        # The older Kafka client's max_block_ms is how long send() may wait for room.
        if "max_block_ms" in client_options:
            block = client_options.pop("max_block_ms")
            send_timeout = send_timeout if send_timeout is not None else float(block) / 1000
        url, orchestrator, orchestrator_endpoint, client_options = where_to(
            url, orchestrator, orchestrator_endpoint, client_options)
        if spool is not None and strict:
            raise ConfigurationError("spool= keeps messages through outages; strict=True "
                                     "raises instead: choose one")
        self._url = url
        self._orchestrator = orchestrator
        self._endpoint = orchestrator_endpoint
        self._client_options = client_options
        self._topics = _topics(topic)
        # validate: see Codec (None: array dtypes; True: decode each as a consumer will).
        self._codec: Codec[M] = Codec(schema, format=format, max_size=max_message_size,
                                      validate=validate)
        self._max_size = self._codec.max_size  # the codec's, for all encode paths (see start)
        self._encode_into, marker = self._codec.fast_encode_path()
        self._scratch = bytearray(marker)  # this producer's alone: see Codec.fast_encode_path
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._linger = linger
        self._max_in_flight = max(1, max_in_flight)
        # Batches handed to the broker client and not yet confirmed, oldest first.
        self._pipeline: deque[tuple[list[Record], int, asyncio.Future[None] | None]] = deque()
        self._max_count = buffer_size
        self._max_bytes = buffer_bytes
        self._send_timeout = send_timeout
        self._flush_timeout = flush_timeout
        self._close_timeout = close_timeout
        self._spool = None if spool is None else Spool(spool, max_bytes=spool_max_bytes)
        # True while records go to the spool instead of the broker (outage, or
        # the spool still holds older records that must go first).
        self._spooling = False
        self._spool_room: asyncio.Event | None = None
        self._spool_blocked: type[BaseException] | None = None
        self.strict = strict
        self._backend = backend
        self._tracing = tracing  # None: on when OpenTelemetry is configured (mlops_async.tracing)
        self._trace: Tracing | None = None

        self._buf: list[Record] = []
        self._count = 0  # records buffered or in flight
        self._bytes = 0
        self._queued = 0  # sequence number of the last record queued
        self._settled = 0  # records confirmed or refused, in queue order
        self._failures: list[tuple[int, int, BaseException]] = []  # (first seq, last seq, error)
        # Sequence ranges that never reached the spool (a failed disk write), oldest
        # first: the sender settles them as refused when delivery gets there.
        self._holes: deque[tuple[int, int, BaseException]] = deque()
        # (last sequence, first sequence, future), in registration order.
        self._flush_waiters: deque[tuple[int, int, asyncio.Future[None]]] = deque()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._listeners: list[Callable[[int], None]] = []
        # Set while the sender waits for work; cleared by whoever wakes it, so a send
        # looks at one attribute, not at a future, per message. _woken: woken, not run yet.
        self._wakeup: asyncio.Future[None] | None = None
        self._woken = False
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the sender's, set at start
        self._connected = False
        self._closing = False
        self._closed = False
        self._released: asyncio.Future[None] | None = None  # set once close() released all
        self._start_lock = asyncio.Lock()
        self._outage = Outage("producer")
        self._auth_failed = False
        self.sent = 0
        self.failed = 0

    # -- life cycle ---------------------------------------------------------

    def __repr__(self) -> str:
        state = ("closed" if self._closed or self._closing
                 else "started" if self._sender is not None else "not started")
        return describe(self, self._url, self._orchestrator, self._endpoint, self._backend,
                        self._topics, "", state)

    @property
    def backend(self) -> Backend | None:
        return self._backend

    async def start(self) -> None:
        """Connect to the broker. Lenient mode tolerates an absent broker (sends queue up)."""
        async with self._start_lock:
            if self._closed or self._closing:
                raise BusClosed("producer is closed")
            check_loop(self, self._loop)
            if self._sender is not None:
                return
            if self._backend is None:
                self._backend = await open_backend(
                    self._url, self._orchestrator, self._endpoint, self._client_options
                )
            self._use_tracing(resolve(self._tracing, self._backend.scheme))
            limit = self._backend.max_record_size
            if limit is not None and limit < self._codec.max_size:
                self._codec.max_size = limit
            self._max_size = self._codec.max_size
            if self._spool is not None:
                await self._spool.open()
                self._spool_room = asyncio.Event()
                # Records an earlier producer left go out first, in order, and count as
                # queued here: flush() and close() wait for them like for our own.
                self._spooling = self._spool.rows > 0
                self._queued += self._spool.rows
            try:
                await self._backend.connect()
                self._connected = True
            except AuthenticationError as exc:
                if self.strict:
                    await self._backend.close()
                    raise
                # Not an outage: retrying with the same credentials cannot help. Sends
                # are accepted and refused by the broker (flush() raises PublishError).
                self._refuse(0, exc, [])
            except BusUnavailable as exc:
                if self.strict:
                    await self._backend.close()
                    raise
                detail = "messages will queue"
                if self._spool is not None:
                    self._spooling = True
                    detail = f"messages go to the spool {str(self._spool.directory)!r}"
                self._outage.down(exc, asyncio.get_running_loop().time(), detail)
            self._loop = asyncio.get_running_loop()
            self._sender = asyncio.create_task(self._supervised(),
                                               name="mlops_async.producer.sender")
            self._sender.add_done_callback(self._sender_done)

    def _use_tracing(self, trace: Tracing | None) -> None:
        self._trace = trace
        if trace is not None:
            # Chosen here: an untraced producer's send stays exactly as it is.
            self.send = self._traced_send  # type: ignore[method-assign]
            self.send_many = self._traced_send_many  # type: ignore[method-assign]

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        """The sender ends only at close, or when its loop shuts down under it (an
        ``asyncio.run()`` that returned): then the next send goes through start()
        again, which says the loop is gone instead of queueing for a dead sender."""
        if not self._closing and self._sender is sender:
            self._sender = None

    async def close(self) -> None:
        """Deliver what is queued, then release everything; safe to call twice.

        Waits up to ``close_timeout`` while the broker answers, and no longer
        than ``flush_timeout`` while it is away. With a spool, what is still undelivered then is
        written to the spool (the next producer on it delivers it); without
        one it is counted in the log at ERROR level, never dropped without a
        word. Cancelling ``close()`` still releases everything before the
        cancellation propagates.
        """
        if self._released is None or not self._released.done():
            check_loop(self, self._loop)
        if self._released is not None:
            # Closed, or a close() is under way: return once everything is released.
            await asyncio.shield(self._released)
            return
        self._released = asyncio.get_running_loop().create_future()
        self._closing = True
        sender = self._sender
        try:
            if sender is not None and not sender.done() and self._settled < self._queued:
                wait = self._close_timeout
                if self._outage.active:  # no point waiting long for a broker that is away
                    wait = min(wait, self._flush_timeout)
                try:
                    async with asyncio.timeout(wait):
                        await self._wait_settled(self._queued)
                except (TimeoutError, BusError) as exc:
                    log.warning("producer close: could not deliver everything: %r", exc)
        finally:
            self._closed = True
            # The clean-up runs to its end even if close() itself is cancelled, once
            # or again while it runs: every step of it is bounded, and a clean-up
            # left running would hold the connection and the spool's lock.
            cleanup = asyncio.ensure_future(self._release(sender))
            cleanup.add_done_callback(self._on_released)
            cancelled = False
            while not cleanup.done():
                try:
                    await asyncio.shield(cleanup)
                except asyncio.CancelledError:
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError
            cleanup.result()

    def _on_released(self, cleanup: asyncio.Future[None]) -> None:
        assert self._released is not None
        self._released.set_result(None)
        if not cleanup.cancelled() and cleanup.exception() is not None:
            # Retrieved here: the close() that ran it raises it, unless it was cancelled.
            log.debug("producer close: %r", cleanup.exception())

    async def _release(self, sender: asyncio.Task[None] | None) -> None:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        pending = [c for _, _, c in self._pipeline if c is not None and not c.done()]
        for confirm in pending:
            confirm.cancel()
        if pending:
            # wait() collects their outcome without raising it.
            await asyncio.wait(pending)
        for _, _, c in self._pipeline:
            if c is not None and c.done() and not c.cancelled():
                c.exception()  # retrieved: their records are counted below
        unsent = [r for batch, _, _ in self._pipeline for r in batch] + self._buf
        self._pipeline.clear()
        self._buf = []
        if unsent and self._spool is not None:
            try:
                # Already accepted: they go in whatever the spool's size bound says.
                await self._spool.append([(0, r) for r in unsent], force=True)
                log.warning("producer closed with %d message(s) undelivered: kept in the spool "
                            "%s for the next producer", len(unsent), str(self._spool.directory))
                unsent = []
            except Exception as exc:
                log.error("producer close: cannot write to the spool: %r", exc)
        if unsent:
            log.error("producer closed with %d message(s) undelivered", len(unsent))
        self._fail_waiters(BusClosed("producer closed"))
        if self._spool is not None:
            await self._spool.close()
        if self._backend is not None:
            await self._backend.close()

    # -- sending -----------------------------------------------------------

    async def send(
        self,
        msg: M,
        *,
        topic: str | Sequence[str] | None = None,
        key: str | bytes | None = None,
        headers: HeadersIn = None,
        flush: bool = False,
    ) -> None:
        """Queue ``msg`` for every target topic; returns once queued.

        With ``flush=True`` returns once the broker confirmed it. Waits while
        the buffer is full. Raises :class:`MessageTooLarge`/:class:`EncodeError`
        for a bad message, :class:`SendTimeout` after ``send_timeout``,
        :class:`BusUnavailable` in strict mode during an outage, and
        :class:`BusClosed` after close.
        """
        if self._sender is None or self._closing:
            await self._ensure_open()
            if self._trace is not None:  # started just now, traced: send() is now that
                return await self._traced_send(msg, topic=topic, key=key, headers=headers,
                                               flush=flush)
        if self._woken and len(self._buf) >= self._batch_size:
            # The sender is ready to cut a full batch, but runs only when this task
            # yields: let it, so a fast producer's records leave while they are still in
            # cache (refilling the whole buffer before each yield cost ~140 ns a message
            # in cache misses, on a backend that confirms at once). Before this message
            # is queued: a send cancelled here sent nothing.
            await asyncio.sleep(0)
        # _encoded() inlined: no Python call per message here.
        try:
            self._encode_into(msg, self._scratch, 1)
            value = bytes(self._scratch)
        except Exception:
            value = self._codec.encode(msg)  # raises the error that names the fault
        if len(value) > self._max_size:
            value = self._codec.encode(msg)  # raises MessageTooLarge
        if self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        if self._spooling:
            await self._send_to_spool(value, topic, key, headers)
        elif key is None and headers is None and (
            (topic is None and len(self._topics) == 1) or topic.__class__ is str
        ):
            # The common case, kept short: one topic (the producer's or a name), no key,
            # no headers.
            size = len(value)
            count = self._count
            if (
                count
                and (count >= self._max_count or self._bytes + size > self._max_bytes)
                and await self._wait_for_room(1, size)
            ):
                await self._send_to_spool(value, topic, key, headers)  # went away meanwhile
            else:
                self._buf.append(Record(self._topics[0] if topic is None else topic, value))
                self._count += 1
                self._bytes += size
                self._queued += 1
        else:
            topics = self._topics if topic is None else _topics(topic)
            if not topics:
                raise ValueError("no topic: pass topic= to send() or to the Producer")
            k = key.encode() if isinstance(key, str) else key
            h = _headers(headers) if headers else None
            n = len(topics)
            size = len(value) * n
            if (
                self._count
                and (self._count + n > self._max_count or self._bytes + size > self._max_bytes)
                and await self._wait_for_room(n, size)
            ):
                await self._send_to_spool(value, topic, key, headers)  # went away meanwhile
            else:
                buf = self._buf
                for t in topics:
                    buf.append(Record(t, value, k, h))
                self._count += n
                self._bytes += size
                self._queued += n
        if self._wakeup is not None:  # set only while the sender waits: once per wake-up
            self._wake_sender()
        if flush:
            await self.flush()

    def _encoded_all(self, msgs: Iterable[M]) -> list[bytes]:
        """:meth:`_encoded` of every message in one pass; the first that fails or is too
        large raises ``Codec.encode``'s error, before any is queued."""
        msgs = msgs if isinstance(msgs, list | tuple) else list(msgs)  # read twice on error
        into, scratch = self._encode_into, self._scratch
        try:
            # into() returns None: "or" makes it one expression, for a comprehension.
            values = [into(m, scratch, 1) or bytes(scratch) for m in msgs]
            if not values or max(map(len, values)) <= self._max_size:
                return values
        except Exception:
            pass
        encode = self._codec.encode
        return [encode(m) for m in msgs]

    def _encoded(self, msg: M) -> bytes:
        """``Codec.encode`` with a leaner body (``Codec.fast_encode_path``); a message
        that fails or is too large goes through ``Codec.encode`` for the error it raises."""
        try:
            self._encode_into(msg, self._scratch, 1)
            value = bytes(self._scratch)
        except Exception:
            return self._codec.encode(msg)
        if len(value) > self._max_size:  # the backend may lower it at start
            return self._codec.encode(msg)
        return value

    def try_send(self, msg: M, topic: str, key: bytes | None = None) -> bool:
        """Queue ``msg`` for ``topic`` now if that needs no wait; False if it was not queued.

        For loops that queue many messages without a coroutine each (the
        engine): True when the message is in the buffer, as after ``send``;
        False when ``send`` must be awaited instead (not started, buffer full,
        an outage, the spool, tracing on). Raises what ``send`` raises for a
        bad message (:class:`EncodeError`, :class:`MessageTooLarge`).
        """
        if (self._sender is None or self._closing or self._spooling
                or self._trace is not None or (self.strict and self._outage.active)):
            return False
        value = self._encoded(msg)
        size = len(value)
        count = self._count
        if count and (count >= self._max_count or self._bytes + size > self._max_bytes):
            return False
        self._buf.append(Record(topic, value, key))
        self._count = count + 1
        self._bytes += size
        self._queued += 1
        if self._wakeup is not None:  # set only while the sender waits: once per wake-up
            self._wake_sender()
        return True

    async def _send_to_spool(self, value: bytes, topic: str | Sequence[str] | None,
                             key: str | bytes | None, headers: HeadersIn) -> None:
        """Accept a message during an outage: on disk in the spool before this returns."""
        spool = self._spool
        assert spool is not None and self._spool_room is not None
        topics = self._topics if topic is None else _topics(topic)
        if not topics:
            raise ValueError("no topic: pass topic= to send() or to the Producer")
        k = key.encode() if isinstance(key, str) else key
        h = _headers(headers) if headers else None
        records = [Record(t, value, k, h) for t in topics]
        size = len(value) * len(records)
        loop = asyncio.get_running_loop()
        deadline = None if self._send_timeout is None else loop.time() + self._send_timeout
        while not spool.room(size):
            if self._closing:
                raise BusClosed("producer is closed")
            self._spool_room.clear()
            try:
                async with asyncio.timeout(None if deadline is None
                                           else max(0.0, deadline - loop.time())):
                    await self._spool_room.wait()
            except TimeoutError:
                raise SendTimeout(
                    f"spool full ({spool.bytes} of {spool.max_bytes} bytes) for "
                    f"{self._send_timeout}s"
                ) from None
        # Sequence numbers are taken with no await before append() queues the
        # records, so concurrent sends keep their order in the spool.
        first = self._queued + 1
        self._queued += len(records)
        try:
            await spool.append([(first + i, r) for i, r in enumerate(records)])
        except Exception as exc:  # not accepted: say so here, settle the gap in the sender
            err = BusError(f"cannot write to the spool {str(spool.directory)!r}: {exc!r}")
            self._holes.append((first, first + len(records) - 1, err))
            if self._wakeup is not None:
                self._wake_sender()
            raise err from exc
        if self._wakeup is not None:  # a sender parked on an empty spool delivers this now
            self._wake_sender()

    async def send_many(
        self,
        msgs: Iterable[M],
        *,
        topic: str | Sequence[str] | None = None,
        key: str | bytes | None = None,
        headers: HeadersIn = None,
        flush: bool = False,
    ) -> None:
        """Queue several messages in one pass; same rules and errors as :meth:`send`.

        Every message is encoded first (a bad one raises before any is queued),
        then they enter the buffer in chunks of up to ``batch_size`` with one
        wake-up of the sender per chunk, waiting for room as ``send`` does.
        """
        if self._sender is None or self._closing:
            await self._ensure_open()
            if self._trace is not None:
                return await self._traced_send_many(msgs, topic=topic, key=key,
                                                    headers=headers, flush=flush)
        values = self._encoded_all(msgs)
        if self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        topics = self._topics if topic is None else _topics(topic)
        if not topics:
            raise ValueError("no topic: pass topic= to send_many() or to the Producer")
        k = key.encode() if isinstance(key, str) else key
        h = _headers(headers) if headers else None
        step = max(1, self._batch_size // len(topics))
        for i in range(0, len(values), step):
            chunk = values[i:i + step]
            if self._spooling:
                for value in chunk:
                    await self._send_to_spool(value, topic, key, headers)
                continue
            n = len(chunk) * len(topics)
            size = sum([len(v) for v in chunk]) * len(topics)
            if (
                self._count
                and (self._count + n > self._max_count or self._bytes + size > self._max_bytes)
                and await self._wait_for_room(n, size)
            ):
                for value in chunk:  # the broker went away meanwhile
                    await self._send_to_spool(value, topic, key, headers)
                continue
            if len(topics) == 1:
                t = topics[0]
                self._buf.extend([Record(t, v, k, h) for v in chunk])
            else:
                self._buf.extend([Record(t, v, k, h) for v in chunk for t in topics])
            self._count += n
            self._bytes += size
            self._queued += n
            if self._wakeup is not None:
                self._wake_sender()
        if flush:
            await self.flush()

    async def _traced_send(self, msg: M, *, topic: str | Sequence[str] | None = None,
                           key: str | bytes | None = None, headers: HeadersIn = None,
                           flush: bool = False) -> None:
        """``send`` in a PRODUCER span whose context goes in the headers (tracing on)."""
        assert self._trace is not None
        topics = self._topics if topic is None else _topics(topic)
        with self._trace.publishing(topics or ("",), headers, msg) as traced:
            await Producer.send(self, msg, topic=topic, key=key, headers=traced, flush=flush)

    async def _traced_send_many(self, msgs: Iterable[M], *,
                                topic: str | Sequence[str] | None = None,
                                key: str | bytes | None = None, headers: HeadersIn = None,
                                flush: bool = False) -> None:
        """``send_many`` in one PRODUCER span; every message carries its context."""
        assert self._trace is not None
        msgs = list(msgs)
        topics = self._topics if topic is None else _topics(topic)
        with self._trace.publishing(topics or ("",), headers, count=len(msgs)) as traced:
            await Producer.send_many(self, msgs, topic=topic, key=key, headers=traced,
                                     flush=flush)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far was confirmed by the broker.

        Lenient mode waits at most ``flush_timeout`` seconds, then logs and
        returns with the messages still queued (an outage never stalls the
        caller). ``timeout`` sets an explicit bound instead and raises
        ``TimeoutError`` when it passes. Raises :class:`PublishError` if the
        broker refused any of those records, and :class:`BusUnavailable` in
        strict mode during an outage.
        """
        check_loop(self, self._loop)
        if self._sender is None:
            return
        target = self._queued
        if timeout is not None or self.strict:
            async with asyncio.timeout(timeout):
                await self._wait_settled(target)
            return
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._wait_settled(target)
        except TimeoutError:
            where = f"in the spool {str(self._spool.directory)!r}" if self._spooling and \
                self._spool is not None else "queued"
            log.log(logging.INFO if self._outage.active else logging.WARNING,
                    "flush: %d message(s) not confirmed after %.1fs; they stay %s",
                    target - self._settled, self._flush_timeout, where)

    def task(self, correlation_id: str, *, topic: str = "status", creator: str | None = None,
             stage: str | None = None, webhook: Webhook | None = None) -> TaskStatus:
        """Report a task's status on ``topic``: ``async with producer.task(cid) as t: ...``.

        See :func:`mlops_async.status.task_status`.
        """
        return task_status(self, correlation_id, topic=topic, creator=creator, stage=stage,
                           webhook=webhook)

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "buffered": self._count,
            "buffered_bytes": self._bytes,
            "outage": self._outage.active,
        }

    # -- internals -----------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._closing or self._closed:
            raise BusClosed("producer is closed")
        await self.start()

    async def _wait_for_room(self, n: int, size: int) -> bool:
        """Wait until ``n`` records of ``size`` bytes fit in memory.

        Returns True if the broker went away meanwhile and the records must go
        to the spool instead (memory is for records sent while the broker is up).
        """
        check_loop(self, self._loop)
        loop = asyncio.get_running_loop()
        deadline = None if self._send_timeout is None else loop.time() + self._send_timeout
        while self._count and (
            self._count + n > self._max_count or self._bytes + size > self._max_bytes
        ):
            if self._closing:
                raise BusClosed("producer is closed")
            if self.strict and self._outage.active:
                raise BusUnavailable("broker unavailable (strict mode)")
            fut = loop.create_future()
            self._room_waiters.append(fut)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that arrives as the future completes.
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                raise SendTimeout(
                    f"send buffer full ({self._count} records, {self._bytes} bytes) for "
                    f"{self._send_timeout}s"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self._room_waiters.remove(fut)
            if self._spooling:
                return True
        return False

    @property
    def sequence(self) -> int:
        """How many records were queued so far (a position for :meth:`confirmed`)."""
        return self._queued

    @property
    def settled(self) -> int:
        """How many records were settled (confirmed or refused), in queue order."""
        return self._settled

    def confirmed(self, first: int, last: int) -> asyncio.Future[None]:
        """A future that resolves once records ``first..last`` (sequence numbers) are settled.

        It fails with :class:`PublishError` if the broker refused any of them.
        Lets a caller act on confirmation (e.g. acknowledge an input) without a
        task waiting per message.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._settled >= last:
            self._resolve(fut, first, last)
        else:
            self._flush_waiters.append((last, first, fut))
        return fut

    def add_confirm_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(settled)`` each time records up to ``settled`` were settled.

        Settled means confirmed, or refused for good (see :meth:`refused`). For
        code that tracks many positions without a future per message.
        """
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

    def _resolve(self, fut: asyncio.Future[None], first: int, last: int) -> None:
        if fut.done():
            return
        exc = self.refused(first, last)
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(None)

    async def _wait_settled(self, target: int) -> None:
        if self._settled < target and self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        fut = self.confirmed(self._settled + 1, target)
        try:
            await fut
        finally:
            if not fut.done():  # timed out or cancelled: forget the waiter
                fut.cancel()
                self._flush_waiters = deque(w for w in self._flush_waiters if w[2] is not fut)

    def _settle(self, n: int) -> None:
        self._settled += n
        waiters = self._flush_waiters
        # Waiters are registered with non-decreasing targets: resolve from the left.
        while waiters and waiters[0][0] <= self._settled:
            _, first, fut = waiters.popleft()
            self._resolve(fut, first, self._settled)
        for listener in self._listeners:
            listener(self._settled)
        # Failures older than every waiter can no longer be reported to anyone.
        if len(self._failures) > 100 and not waiters:
            del self._failures[:-100]

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._flush_waiters = self._flush_waiters, deque()
        for _, _, fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
        while self._room_waiters:
            fut = self._room_waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the waiter re-checks and sees the closed state

    def _cut_batch(self) -> tuple[list[Record], int]:
        """Take the oldest records: up to ``batch_size`` and about ``batch_bytes``.

        The byte bound uses the buffer's average record size, so the cut is one
        C-level slice rather than a Python loop over every record. Taking the
        whole buffer (the common case) needs no pass at all: ``_bytes`` counts
        the buffer and the pipeline, whose batches know their sizes.
        """
        buf = self._buf
        n = min(len(buf), self._batch_size)
        if self._bytes > self._batch_bytes and self._count:
            n = max(1, min(n, self._batch_bytes * self._count // self._bytes))
        if n == len(buf):
            self._buf = []
            return buf, self._bytes - sum([size for _, size, _ in self._pipeline])
        batch = buf[:n]
        del buf[:n]
        return batch, sum([len(r.value) for r in batch])

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
        """The sender: cut batches, keep up to ``max_in_flight`` unconfirmed, settle in order."""
        loop = asyncio.get_running_loop()
        pipeline = self._pipeline
        while True:
            if self._spooling:
                await self._drain_spool()
                continue
            if not self._buf and not pipeline:
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                    self._woken = False
                if self._linger > 0 and len(self._buf) < self._batch_size:
                    await asyncio.sleep(self._linger)
            if self._trace is None and self._tracing is None and self._backend is not None:
                # Once per batch: a TracerProvider configured after start is picked up.
                self._use_tracing(appeared(None, self._backend.scheme, "producer"))
            while self._buf and len(pipeline) < self._max_in_flight:
                batch, size = self._cut_batch()
                confirm = await self._enqueue(batch)
                pipeline.append((batch, size, confirm))
                if confirm is None:
                    break  # the broker is away: settle (and retry) before enqueueing more
            if not pipeline:
                continue
            # The oldest batch stays in the pipeline until settled: close() and a
            # spill to the spool find every unsettled record there or in _buf.
            batch, size, confirm = pipeline[0]
            if not await self._deliver(batch, confirm):
                continue  # spilled to the spool, with everything behind it
            pipeline.popleft()
            self._count -= len(batch)
            self._bytes -= size
            self._settle(len(batch))
            self._wake_room()

    def _wake_sender(self) -> None:
        """Wake the sender waiting for work (``_wakeup`` is not None)."""
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            # What this call queued is not stranded: the sender's own loop is woken.
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._wake_sender)
            check_loop(self, self._loop)
        wakeup, self._wakeup = self._wakeup, None
        self._woken = True
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _wake_room(self) -> None:
        while self._room_waiters:
            fut = self._room_waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _enqueue(self, batch: list[Record]) -> asyncio.Future[None] | None:
        """Hand ``batch`` to the broker client; None if that failed (``_deliver`` retries)."""
        assert self._backend is not None
        try:
            if not self._connected:
                await self._backend.connect()
                self._connected = True
            return await self._backend.enqueue(batch)
        except Exception:
            return None

    async def _deliver(self, batch: list[Record], confirm: asyncio.Future[None] | None) -> bool:
        """Wait for ``batch`` to be confirmed, publishing it again while the broker is away.

        Returns False if the broker is away and the records went to the spool instead.
        """
        assert self._backend is not None
        backend = self._backend
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            try:
                if confirm is not None:
                    await confirm
                else:
                    if not self._connected:
                        await backend.connect()
                        self._connected = True
                    await backend.publish(batch)
            except BusUnavailable as exc:
                confirm = None
                if self._spool is not None:
                    self._outage.down(exc, loop.time(), "messages go to the spool "
                                      f"{str(self._spool.directory)!r}")
                    await self._spill()
                    return False
                self._outage.down(exc, loop.time(), f"{self._count} message(s) held")
                if self.strict:
                    self._fail_waiters(exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # refused for good: report, never hide
                self._refuse(len(batch), exc, sorted({r.topic for r in batch}))
                return True
            self.sent += len(batch)
            if self._outage.active:
                self._outage.up(loop.time(), f"delivering {self._count} held message(s)")
            return True

    def _refuse(self, n: int, exc: BaseException, topics: list[str]) -> None:
        if n:
            first = self._settled + 1
            self._failures.append((first, first + n - 1, exc))
            self.failed += n
        if isinstance(exc, AuthenticationError):
            # One ERROR for bad credentials, not one per batch.
            level = logging.DEBUG if self._auth_failed else logging.ERROR
            self._auth_failed = True
            log.log(level, "%s; %d record(s) refused", exc, n)
            return
        log.error("broker refused %d record(s) for %s: %s", n, topics, exc)

    async def _spill(self) -> None:
        """The broker went away: move every unsettled record to the spool, in order."""
        spool = self._spool
        assert spool is not None
        self._spooling = True  # from now on send() writes to the spool, behind these
        records = [r for batch, _, _ in self._pipeline for r in batch] + self._buf
        for _, _, confirm in self._pipeline:
            if confirm is not None and not confirm.done():
                confirm.cancel()  # a late confirmation would only mean a duplicate
        self._pipeline.clear()
        self._buf = []
        first = self._settled + 1
        self._count = 0
        self._bytes = 0
        self._wake_room()
        if records:
            # Already accepted: they go in whatever the spool's size bound says.
            try:
                await spool.append([(first + i, r) for i, r in enumerate(records)], force=True)
            except Exception as exc:  # the disk failed too: lost, and said loudly
                log.error("producer: %d message(s) lost: the broker is away and the spool "
                          "%s cannot be written: %r", len(records), str(spool.directory), exc)
                self._holes.appendleft((first, first + len(records) - 1, exc))
                self._settle_holes()

    def _settle_rows(self, n: int) -> None:
        """Settle ``n`` rows delivered from the spool, and the holes between them, in order."""
        while n:
            self._settle_holes()
            step = n if not self._holes else min(n, self._holes[0][0] - self._settled - 1)
            self._settle(step)
            n -= step
        self._settle_holes()

    def _settle_holes(self) -> None:
        """Settle, as refused, the ranges that never reached the spool once they are next."""
        holes = self._holes
        while holes and holes[0][0] == self._settled + 1:
            first, last, exc = holes.popleft()
            self._failures.append((first, last, exc))
            self.failed += last - first + 1
            self._settle(last - first + 1)

    async def _drain_spool(self) -> None:
        """Deliver the spool, oldest first, until it is empty; then sends go to the broker again."""
        spool = self._spool
        backend = self._backend
        assert spool is not None and backend is not None and self._spool_room is not None
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            self._settle_holes()
            rows = await spool.head(self._batch_size)
            if not rows:
                if spool.rows == 0 and self._outage.active:
                    # Empty, but the broker is still away: what send() accepts next
                    # must go to disk too, so stay in spool mode until a send wakes us.
                    self._wakeup = loop.create_future()
                    try:
                        await self._wakeup
                    finally:
                        self._wakeup = None
                        self._woken = False
                    continue
                if spool.rows == 0:
                    self._spooling = False
                    return
                await spool.flushed()  # appends in flight: they are next
                continue
            records = [r for _, _, r in rows]
            try:
                if not self._connected:
                    await backend.connect()
                    self._connected = True
                await backend.publish(records)
            except BusUnavailable as exc:
                self._outage.down(exc, loop.time(), f"{spool.rows} message(s) in the spool")
                await asyncio.sleep(backoff.next_delay())
                continue
            except (PublishError, MessageTooLarge) as exc:  # these records refused for good
                refused: BaseException | None = exc
            except Exception as exc:
                # Not about these records (bad credentials, a missing extra, a bug): the
                # spool keeps them; say why once, and try again later.
                if type(exc) is not self._spool_blocked:
                    self._spool_blocked = type(exc)
                    log.error("producer: cannot deliver the spool %s (%d record(s) kept): %r",
                              str(spool.directory), spool.rows, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            else:
                refused = None
                self._spool_blocked = None
                self.sent += len(records)
                backoff.reset()
                if self._outage.active:
                    self._outage.up(loop.time(), f"delivering {spool.rows} spooled message(s)")
            await spool.remove(rows[-1][0], len(rows), sum(len(r.value) for r in records))
            # Every row has its place in this producer's sequence: its own sends, what
            # it spilled, and (counted at start) what an earlier producer left.
            if refused is not None:
                self._refuse(len(rows), refused, sorted({r.topic for r in records}))
            self._settle_rows(len(rows))
            self._spool_room.set()
