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
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic

from typing_extensions import TypeVar

from ._client import AsyncResource, Outage, open_backend, topic_names, where_to
from .backends import Backend, Record
from .codec import DEFAULT_MAX_SIZE, Codec, Format
from .errors import (
    AuthenticationError,
    BusClosed,
    BusError,
    BusUnavailable,
    ConfigurationError,
    SendTimeout,
)
from .message import MLOpsMessage
from .outbox import Batching, RecordBuffer, Sender, SequenceLedger, SpoolPath
from .status import TaskStatus, Webhook, task_status
from .tracing import Tracing, resolve

__all__ = ["Producer"]

log = logging.getLogger("mlops_async.producer")

M = TypeVar("M", default=MLOpsMessage)
_DEFAULT_SCHEMA: Any = MLOpsMessage  # typed Any so that Producer() infers M = MLOpsMessage

HeadersIn = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None


class _SpanHeaders(tuple[tuple[str, bytes], ...]):
    """Headers that already carry this send's trace span (a traced send's second pass)."""

    __slots__ = ()


def _headers(headers: HeadersIn) -> tuple[tuple[str, bytes], ...] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((k, v.encode() if isinstance(v, str) else bytes(v)) for k, v in items)


def _records(value: bytes, topics: Sequence[str], key: str | bytes | None,
             headers: HeadersIn) -> list[Record]:
    """One encoded message as a record per topic, with the key and headers as bytes."""
    if not topics:
        raise ValueError("no topic: pass topic= to send() or to the Producer")
    k = key.encode() if isinstance(key, str) else key
    h = _headers(headers) if headers else None
    return [Record(t, value, k, h) for t in topics]


class Producer(AsyncResource, Generic[M]):
    """Publishes messages to one or more topics.

    ``url`` picks the broker (``memory://``, ``kafka://host:9092``,
    ``redis://host:6379/0``); the seed's ``orchestrator``/``orchestrator_endpoint``
    spelling works too. Keyword arguments the library does not know are handed
    to the broker client (e.g. ``acks``, ``compression_type``).

    The work is done by parts with one job each (:mod:`mlops_async.outbox`): a
    bounded :class:`~mlops_async.outbox.RecordBuffer`, a
    :class:`~mlops_async.outbox.SequenceLedger` of what was accepted and settled,
    the :class:`~mlops_async.outbox.Sender` task and, with ``spool=``, a
    :class:`~mlops_async.outbox.SpoolPath`. ``send`` inlines the buffer's
    capacity rule and the codec's fast path: the one hot path of this class.
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
        self._topics = topic_names(topic)
        self._codec: Codec[M] = Codec(schema, format=format, max_size=max_message_size)
        self._max_size = self._codec.max_size  # the codec's, for all encode paths (see start)
        self._encode_into, marker = self._codec.fast_encode_path()
        self._scratch = bytearray(marker)  # this producer's alone: see Codec.fast_encode_path
        self._batch_size = batch_size
        self._batching = Batching(batch_size, batch_bytes, linger, max_in_flight)
        self._buffer = RecordBuffer(buffer_size, buffer_bytes)
        self._ledger = SequenceLedger()
        self._spool = None if spool is None else SpoolPath(spool, spool_max_bytes, self._ledger)
        self._send_timeout = send_timeout
        self._flush_timeout = flush_timeout
        self._close_timeout = close_timeout
        self.strict = strict
        self._backend = backend
        self._tracing = tracing  # None: on when OpenTelemetry is configured (mlops_async.tracing)
        self._trace: Tracing | None = None
        self._sender: Sender | None = None  # set once started
        self._closing = False
        self._closed = False
        self._released: asyncio.Future[None] | None = None  # set once close() released all
        self._start_lock = asyncio.Lock()
        self._outage = Outage("producer")

    # -- life cycle ---------------------------------------------------------

    @property
    def backend(self) -> Backend | None:
        return self._backend

    @property
    def ledger(self) -> SequenceLedger:
        """Where every accepted record stands (numbered in the order accepted)."""
        return self._ledger

    @property
    def sent(self) -> int:
        """Records the broker confirmed."""
        return 0 if self._sender is None else self._sender.sent

    @property
    def failed(self) -> int:
        """Records the broker refused for good (or that never reached the spool)."""
        return self._ledger.failed

    async def start(self) -> None:
        """Connect to the broker. Lenient mode tolerates an absent broker (sends queue up)."""
        async with self._start_lock:
            if self._closed or self._closing:
                raise BusClosed("producer is closed")
            if self._sender is not None:
                return
            if self._backend is None:
                self._backend = await open_backend(
                    self._url, self._orchestrator, self._endpoint, self._client_options
                )
            backend = self._backend
            self._trace = resolve(self._tracing, backend.scheme)
            limit = backend.max_record_size
            if limit is not None and limit < self._codec.max_size:
                self._codec.max_size = limit
            self._max_size = self._codec.max_size
            sender = Sender(backend, self._buffer, self._ledger, self._outage, self._batching,
                            strict=self.strict, spool=self._spool)
            if self._spool is not None:
                # Records an earlier producer left go out first, in order, and count as
                # accepted here: flush() and close() wait for them like for our own.
                left = await self._spool.open()
                self._ledger.take(left)
                sender.spooling = left > 0
            try:
                await sender.connect()
            except AuthenticationError as exc:
                if self.strict:
                    await backend.close()
                    raise
                # Not an outage: retrying with the same credentials cannot help. Sends
                # are accepted and refused by the broker (flush() raises PublishError).
                sender.refuse(0, exc, [])
            except BusUnavailable as exc:
                if self.strict:
                    await backend.close()
                    raise
                detail = "messages will queue"
                if self._spool is not None:
                    sender.spooling = True
                    detail = f"messages go to the spool {str(self._spool.directory)!r}"
                self._outage.down(exc, asyncio.get_running_loop().time(), detail)
            sender.start()
            self._sender = sender

    async def close(self) -> None:
        """Deliver what is queued, then release everything; safe to call twice.

        Waits up to ``close_timeout`` while the broker answers, and no longer
        than ``flush_timeout`` while it is away. With a spool, what is still undelivered then is
        written to the spool (the next producer on it delivers it); without
        one it is counted in the log at ERROR level, never dropped without a
        word. Cancelling ``close()`` still releases everything before the
        cancellation propagates.
        """
        if self._released is not None:
            # Closed, or a close() is under way: return once everything is released.
            await asyncio.shield(self._released)
            return
        self._released = asyncio.get_running_loop().create_future()
        self._closing = True
        sender, ledger = self._sender, self._ledger
        try:
            if sender is not None and sender.running and ledger.settled < ledger.queued:
                wait = self._close_timeout
                if self._outage.active:  # no point waiting long for a broker that is away
                    wait = min(wait, self._flush_timeout)
                try:
                    async with asyncio.timeout(wait):
                        await self._wait_settled(ledger.queued)  # strict: raises at once
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

    async def _release(self, sender: Sender | None) -> None:
        unsent = [] if sender is None else await sender.stop()
        if unsent and self._spool is not None and await self._spool.keep(unsent):
            unsent = []
        if unsent:
            log.error("producer closed with %d message(s) undelivered", len(unsent))
        self._ledger.fail_waiters(BusClosed("producer closed"))
        self._buffer.wake_all()  # senders waiting for room see the closed state
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
        sender = self._sender
        if sender is None or self._closing:
            sender = await self._ensure_open()
        if self._trace is not None and headers.__class__ is not _SpanHeaders:
            # The span wraps this whole call, which runs again with its headers.
            topics = self._topics if topic is None else topic_names(topic)
            with self._trace.publishing(topics or ("",), headers, msg) as traced:
                return await Producer.send(self, msg, topic=topic, key=key,
                                           headers=_SpanHeaders(traced), flush=flush)
        buffer = self._buffer
        if sender.woken and len(buffer.records) >= self._batch_size:
            # The sender is ready to cut a full batch, but runs only when this task
            # yields: let it, so a fast producer's records leave while still in cache.
            # Before this message is queued: a send cancelled here sent nothing.
            await asyncio.sleep(0)
        # Codec.encode's fast path, inlined: no Python call per message here.
        try:
            self._encode_into(msg, self._scratch, 1)
            value = bytes(self._scratch)
        except Exception:
            value = self._codec.encode(msg)  # raises the error that names the fault
        if len(value) > self._max_size:
            value = self._codec.encode(msg)  # raises MessageTooLarge
        if self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        if sender.spooling:
            await self._to_spool(value, topic, key, headers)
        elif key is None and headers is None and (
            (topic is None and len(self._topics) == 1) or topic.__class__ is str
        ):
            # The common case, kept short: one topic, no key, no headers; the buffer's
            # capacity rule (RecordBuffer.full_for) and admit() are inlined here.
            size = len(value)
            count = buffer.count
            if (
                count
                and (count >= buffer.max_count or buffer.bytes + size > buffer.max_bytes)
                and await self._wait_for_room(1, size)
            ):
                await self._to_spool(value, topic, key, headers)  # went away meanwhile
            else:
                buffer.records.append(Record(self._topics[0] if topic is None else topic, value))
                buffer.count += 1
                buffer.bytes += size
                self._ledger.queued += 1
        else:
            records = _records(value, self._topics if topic is None else topic_names(topic),
                               key, headers)
            size = len(value) * len(records)
            if buffer.full_for(len(records), size) and await self._wait_for_room(
                    len(records), size):
                await self._to_spool(value, topic, key, headers)  # went away meanwhile
            else:
                buffer.admit(records, size)
                self._ledger.take(len(records))
        if sender.waiting is not None:  # set only while the sender waits: once per wake-up
            sender.wake()
        if flush:
            await self.flush()

    def send_nowait(self, msg: M, topic: str, key: str | bytes | None = None) -> bool:
        """Queue ``msg`` for ``topic`` now if that needs no wait; False if it was not queued.

        For code that queues many messages without a coroutine each (the
        engine's output loop, a synchronous callback): True when the message is
        in the buffer, as after ``send``; False when ``send`` must be awaited
        instead (not started, buffer full, an outage, the spool, tracing on).
        Raises what ``send`` raises for a bad message (:class:`EncodeError`,
        :class:`MessageTooLarge`).
        """
        sender = self._sender
        if (sender is None or self._closing or sender.spooling
                or self._trace is not None or (self.strict and self._outage.active)):
            return False
        value = self._encoded(msg)
        size = len(value)
        if self._buffer.full_for(1, size):
            return False
        k = key.encode() if isinstance(key, str) else key
        self._buffer.admit([Record(topic, value, k)], size)
        self._ledger.queued += 1
        if sender.waiting is not None:
            sender.wake()
        return True

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
        sender = self._sender
        if sender is None or self._closing:
            sender = await self._ensure_open()
        if self._trace is not None and headers.__class__ is not _SpanHeaders:
            msgs = list(msgs)
            topics = self._topics if topic is None else topic_names(topic)
            with self._trace.publishing(topics or ("",), headers, count=len(msgs)) as traced:
                return await Producer.send_many(self, msgs, topic=topic, key=key,
                                                headers=_SpanHeaders(traced), flush=flush)
        values = self._encoded_all(msgs)
        if self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        topics = self._topics if topic is None else topic_names(topic)
        if not topics:
            raise ValueError("no topic: pass topic= to send_many() or to the Producer")
        k = key.encode() if isinstance(key, str) else key
        h = _headers(headers) if headers else None
        buffer = self._buffer
        step = max(1, self._batch_size // len(topics))
        for i in range(0, len(values), step):
            chunk = values[i:i + step]
            n = len(chunk) * len(topics)
            size = sum([len(v) for v in chunk]) * len(topics)
            if sender.spooling or (
                    buffer.full_for(n, size) and await self._wait_for_room(n, size)):
                for value in chunk:  # an outage, now or meanwhile: each goes to disk
                    await self._to_spool(value, topic, key, headers)
                continue
            if len(topics) == 1:
                t = topics[0]
                buffer.admit([Record(t, v, k, h) for v in chunk], size)
            else:
                buffer.admit([Record(t, v, k, h) for v in chunk for t in topics], size)
            self._ledger.take(n)
            if sender.waiting is not None:
                sender.wake()
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

    async def _to_spool(self, value: bytes, topic: str | Sequence[str] | None,
                        key: str | bytes | None, headers: HeadersIn) -> None:
        """Accept a message during an outage: on disk in the spool before this returns."""
        assert self._spool is not None and self._sender is not None
        records = _records(value, self._topics if topic is None else topic_names(topic),
                           key, headers)
        await self._spool.accept(records, self._sender, self._send_timeout,
                                 lambda: self._closing)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far was confirmed by the broker.

        Lenient mode waits at most ``flush_timeout`` seconds, then logs and
        returns with the messages still queued (an outage never stalls the
        caller). ``timeout`` sets an explicit bound instead and raises
        ``TimeoutError`` when it passes. Raises :class:`PublishError` if the
        broker refused any of those records, and :class:`BusUnavailable` in
        strict mode during an outage.
        """
        if self._sender is None:
            return
        target = self._ledger.queued
        if timeout is not None or self.strict:
            async with asyncio.timeout(timeout):
                await self._wait_settled(target)
            return
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._wait_settled(target)
        except TimeoutError:
            where = "queued"
            if self._sender.spooling and self._spool is not None:
                where = f"in the spool {str(self._spool.directory)!r}"
            log.log(logging.INFO if self._outage.active else logging.WARNING,
                    "flush: %d message(s) not confirmed after %.1fs; they stay %s",
                    target - self._ledger.settled, self._flush_timeout, where)

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
            "buffered": self._buffer.count,
            "buffered_bytes": self._buffer.bytes,
            "spooled": 0 if self._spool is None else self._spool.spool.rows,
            "outage": self._outage.active,
        }

    # -- internals -----------------------------------------------------------

    async def _ensure_open(self) -> Sender:
        if self._closing or self._closed:
            raise BusClosed("producer is closed")
        await self.start()
        assert self._sender is not None
        return self._sender

    async def _wait_for_room(self, n: int, size: int) -> bool:
        """Wait until ``n`` records of ``size`` bytes fit in memory.

        Returns True if the broker went away meanwhile and the records must go
        to the spool instead (memory is for records sent while the broker is up).
        """
        loop = asyncio.get_running_loop()
        deadline = None if self._send_timeout is None else loop.time() + self._send_timeout
        buffer = self._buffer
        while buffer.full_for(n, size):
            if self._closing:
                raise BusClosed("producer is closed")
            if self.strict and self._outage.active:
                raise BusUnavailable("broker unavailable (strict mode)")
            try:
                await buffer.wait_for_room(deadline)
            except TimeoutError:
                raise SendTimeout(
                    f"send buffer full ({buffer.count} records, {buffer.bytes} bytes) for "
                    f"{self._send_timeout}s"
                ) from None
            if self._sender is not None and self._sender.spooling:
                return True
        return False

    async def _wait_settled(self, target: int) -> None:
        if self._ledger.settled < target and self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        await self._ledger.wait_settled(target)
