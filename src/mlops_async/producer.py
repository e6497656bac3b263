"""Producer: ``await producer.send(msg)`` from any number of tasks, batched to the broker.

``send`` encodes the message and puts it in a bounded buffer; one sender task
cuts the buffer into batches (by count and bytes, after an optional linger)
and publishes them. The buffer counts a record until the broker confirmed it,
so memory stays bounded whatever the broker does; when it is full, ``send``
waits (backpressure) instead of dropping anything.

When the broker is away the sender keeps the batch and retries with backoff.
By default ``send`` keeps queueing (the orchestration seed's rule: an outage
must not crash the pipeline) and one warning is logged per outage;
``strict=True`` makes ``send`` and ``flush`` raise :class:`BusUnavailable`
instead. Records the broker refuses for good are logged and reported by the
next ``flush()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic

from typing_extensions import TypeVar

from ._client import AsyncResource, Backoff, Outage, open_backend
from .backends import Backend, Record
from .codec import DEFAULT_MAX_SIZE, Codec, Format
from .errors import BusClosed, BusError, BusUnavailable, PublishError, SendTimeout
from .message import MLOpsMessage

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
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        topic: str | Sequence[str] | None = None,
        orchestrator: str | None = None,
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
        close_timeout: float = 30.0,
        strict: bool = False,
        backend: Backend | None = None,
        **client_options: Any,
    ) -> None:
        if batch_size < 1 or buffer_size < batch_size:
            raise ValueError("need 1 <= batch_size <= buffer_size")
        self._url = url
        self._orchestrator = orchestrator
        self._endpoint = orchestrator_endpoint
        self._client_options = client_options
        self._topics = _topics(topic)
        self._codec: Codec[M] = Codec(schema, format=format, max_size=max_message_size)
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._linger = linger
        self._max_in_flight = max(1, max_in_flight)
        # Batches handed to the broker client and not yet confirmed, oldest first.
        self._pipeline: deque[tuple[list[Record], int, asyncio.Future[None] | None]] = deque()
        self._max_count = buffer_size
        self._max_bytes = buffer_bytes
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self.strict = strict
        self._backend = backend

        self._buf: list[Record] = []
        self._count = 0  # records buffered or in flight
        self._bytes = 0
        self._queued = 0  # sequence number of the last record queued
        self._settled = 0  # records confirmed or refused, in queue order
        self._failures: list[tuple[int, int, BaseException]] = []  # (first seq, last seq, error)
        # (last sequence, first sequence, future), in registration order.
        self._flush_waiters: deque[tuple[int, int, asyncio.Future[None]]] = deque()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._listeners: list[Callable[[int], None]] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._connected = False
        self._closing = False
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._outage = Outage("producer")
        self.sent = 0
        self.failed = 0

    # -- life cycle ---------------------------------------------------------

    @property
    def backend(self) -> Backend | None:
        return self._backend

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
            limit = self._backend.max_record_size
            if limit is not None and limit < self._codec.max_size:
                self._codec.max_size = limit
            try:
                await self._backend.connect()
                self._connected = True
            except BusUnavailable as exc:
                if self.strict:
                    await self._backend.close()
                    raise
                self._outage.down(exc, asyncio.get_running_loop().time(), "messages will queue")
            self._sender = asyncio.create_task(self._run(), name="mlops_async.producer.sender")

    async def close(self) -> None:
        """Deliver what is queued (up to ``close_timeout`` s), then release everything.

        Safe to call twice. Records still undelivered after the timeout are
        counted in the log at ERROR level, never dropped without a word.
        """
        if self._closed:
            return
        self._closing = True
        sender = self._sender
        try:
            if sender is not None and not sender.done() and self._settled < self._queued:
                try:
                    await asyncio.wait_for(self._wait_settled(self._queued), self._close_timeout)
                except (TimeoutError, BusError) as exc:
                    log.warning("producer close: could not deliver everything: %r", exc)
        finally:
            self._closed = True
            undelivered = self._queued - self._settled
            if undelivered and sender is not None and not sender.done():
                log.error("producer closed with %d message(s) undelivered", undelivered)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            pending = [c for _, _, c in self._pipeline if c is not None and not c.done()]
            for confirm in pending:
                confirm.cancel()
            if pending:
                # wait() collects their outcome without raising it, and still lets a
                # cancellation of close() itself through.
                await asyncio.wait(pending)
            for _, _, c in self._pipeline:
                if c is not None and c.done() and not c.cancelled():
                    c.exception()  # retrieved: their records were already counted above
            self._pipeline.clear()
            self._fail_waiters(BusClosed("producer closed"))
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
        value = self._codec.encode(msg)
        if self.strict and self._outage.active:
            raise BusUnavailable("broker unavailable (strict mode)")
        if topic is None and key is None and headers is None and len(self._topics) == 1:
            # The common case, kept short: one topic, no key, no headers.
            size = len(value)
            count = self._count
            if count and (count >= self._max_count or self._bytes + size > self._max_bytes):
                await self._wait_for_room(1, size)
            self._buf.append(Record(self._topics[0], value))
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
            if self._count and (
                self._count + n > self._max_count or self._bytes + size > self._max_bytes
            ):
                await self._wait_for_room(n, size)
            buf = self._buf
            for t in topics:
                buf.append(Record(t, value, k, h))
            self._count += n
            self._bytes += size
            self._queued += n
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        if flush:
            await self._wait_settled(self._queued)

    async def send_many(
        self,
        msgs: Iterable[M],
        *,
        topic: str | Sequence[str] | None = None,
        key: str | bytes | None = None,
        headers: HeadersIn = None,
        flush: bool = False,
    ) -> None:
        """Queue several messages; same rules as :meth:`send`."""
        for msg in msgs:
            await self.send(msg, topic=topic, key=key, headers=headers)
        if flush:
            await self.flush()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far was confirmed by the broker.

        Raises :class:`PublishError` if the broker refused any of those
        records, :class:`BusUnavailable` in strict mode during an outage, and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        if self._sender is None:
            return
        target = self._queued
        if timeout is None:
            await self._wait_settled(target)
        else:
            await asyncio.wait_for(self._wait_settled(target), timeout)

    def task(self, correlation_id: str, *, topic: str = "status", creator: str | None = None,
             stage: str | None = None, webhook: Any = None) -> Any:
        """Report a task's status on ``topic``: ``async with producer.task(cid) as t: ...``.

        See :func:`mlops_async.status.task_status`.
        """
        from .status import task_status

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

    async def _wait_for_room(self, n: int, size: int) -> None:
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
                if deadline is None:
                    await fut
                else:
                    await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise SendTimeout(
                    f"send buffer full ({self._count} records, {self._bytes} bytes) for "
                    f"{self._send_timeout}s"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self._room_waiters.remove(fut)

    @property
    def sequence(self) -> int:
        """How many records were queued so far (a position for :meth:`confirmed`)."""
        return self._queued

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
        await self.confirmed(self._settled + 1, target)

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
        C-level slice rather than a Python loop over every record.
        """
        buf = self._buf
        n = min(len(buf), self._batch_size)
        if self._bytes > self._batch_bytes and self._count:
            n = max(1, min(n, self._batch_bytes * self._count // self._bytes))
        batch = buf[:n]
        del buf[:n]
        return batch, sum([len(r.value) for r in batch])

    async def _run(self) -> None:
        """The sender: cut batches, keep up to ``max_in_flight`` unconfirmed, settle in order."""
        loop = asyncio.get_running_loop()
        pipeline = self._pipeline
        while True:
            if not self._buf and not pipeline:
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                if self._linger > 0 and len(self._buf) < self._batch_size:
                    await asyncio.sleep(self._linger)
            while self._buf and len(pipeline) < self._max_in_flight:
                batch, size = self._cut_batch()
                confirm = await self._enqueue(batch)
                pipeline.append((batch, size, confirm))
                if confirm is None:
                    break  # the broker is away: settle (and retry) before enqueueing more
            batch, size, confirm = pipeline.popleft()
            await self._deliver(batch, confirm)
            self._count -= len(batch)
            self._bytes -= size
            self._settle(len(batch))
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

    async def _deliver(self, batch: list[Record], confirm: asyncio.Future[None] | None) -> None:
        """Wait for ``batch`` to be confirmed, publishing it again while the broker is away."""
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
                self._outage.down(exc, loop.time(), f"{self._count} message(s) held")
                if self.strict:
                    self._fail_waiters(exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # refused for good: report, never hide
                first = self._settled + 1
                self._failures.append((first, first + len(batch) - 1, exc))
                self.failed += len(batch)
                topics = sorted({r.topic for r in batch})
                log.error("broker refused %d record(s) for %s: %s", len(batch), topics, exc)
                return
            self.sent += len(batch)
            if self._outage.active:
                self._outage.up(loop.time(), f"delivering {self._count} held message(s)")
            return
