"""The blocking facade: Producer, Consumer and task status for synchronous code.

```python
from mlops_async.sync import Producer, task

with Producer("redis://localhost:6379/0", topic="metrics", schema=Metrics) as p:
    for epoch in range(10):
        loss = train_one_epoch()
        p.send(Metrics(epoch=epoch, loss=loss))
```

Training loops, scikit-learn scripts and notebook cells are synchronous. The
async clients run on one event-loop thread that this module owns (an anyio
``BlockingPortal``, started with the first client and stopped after the last
one closes), and every method here blocks its caller until the async call is
done, so the guarantees are the async clients' own: ``send`` waits while the
bounded buffer is full, ``flush`` waits for the broker's confirmation, a
consumer acknowledges a message only when the next one is asked for (or at a
clean close), and ``close()`` delivers what is queued. Clients still open when
the interpreter exits are closed then (a consumer's message in hand is left
for redelivery).

Ctrl-C: a ``KeyboardInterrupt`` in the caller while it waits cancels the async
call on the loop thread, waits for that cancellation to finish, and then
propagates; a send that was interrupted raised, so it was not queued, and what
was queued before is delivered by ``close()``.

The clients can be shared by threads (a consumer serialises its callers), and
work from a thread whose own event loop is running (a notebook cell): the
caller's loop waits like any other caller, the facade's loop does the work.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio.from_thread

from .consumer import Consumer as AsyncConsumer
from .errors import BusClosed
from .message import MLOpsMessage
from .producer import Producer as AsyncProducer
from .status import TaskStatus, Webhook, task_status

__all__ = ["Consumer", "Producer", "Task", "task"]

M = TypeVar("M")
R = TypeVar("R")

#: How long an interrupted call may take to unwind on the loop thread before Ctrl-C goes on.
CANCEL_WAIT = 10.0


class _Loop:
    """The facade's event-loop thread, shared by every open client of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None = None
        self._clients: dict[int, _Client] = {}
        self._exit_hook = False

    def acquire(self, client: _Client) -> anyio.from_thread.BlockingPortal:
        with self._lock:
            if self._portal is None:
                self._cm = anyio.from_thread.start_blocking_portal(name="mlops-async-sync")
                self._portal = self._cm.__enter__()
                if not self._exit_hook:
                    # Runs before the interpreter joins non-daemon threads (the portal's
                    # is one); an atexit hook would run after that join, which never ends.
                    threading._register_atexit(self.close_all)  # type: ignore[attr-defined]
                    self._exit_hook = True
            self._clients[id(client)] = client
            return self._portal

    def release(self, client: _Client) -> None:
        with self._lock:
            self._clients.pop(id(client), None)
            if self._clients or self._cm is None:
                return
            cm, self._cm, self._portal = self._cm, None, None
        cm.__exit__(None, None, None)

    def close_all(self) -> None:
        """Interpreter exit: close what is still open, then stop the loop."""
        for client in list(self._clients.values()):
            with contextlib.suppress(Exception):
                client._close_at_exit()


_LOOP = _Loop()


class _Client:
    """What the blocking clients share: the portal, and calls that Ctrl-C can interrupt."""

    _portal: anyio.from_thread.BlockingPortal | None = None

    def _call(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run ``await fn(*args)`` on the loop thread and block until it is done.

        A KeyboardInterrupt while blocked cancels the call, waits for it to unwind
        (bounded by CANCEL_WAIT), and propagates.
        """
        portal = self._portal
        if portal is None:
            raise BusClosed(f"{type(self).__name__} is closed")
        unwound = threading.Event()

        async def run() -> R:
            try:
                return await fn(*args)
            finally:
                unwound.set()

        future = portal.start_task_soon(run)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            unwound.wait(CANCEL_WAIT)
            raise

    def _open(self, make: Callable[[], Any]) -> Any:
        self._portal = _LOOP.acquire(self)
        try:
            client = self._portal.call(make)  # built on the loop thread it will run on
            self._call(client.start)
        except BaseException:
            self._portal = None
            _LOOP.release(self)
            raise
        return client

    def _done(self) -> None:
        if self._portal is not None:
            self._portal = None
            _LOOP.release(self)

    def _close_at_exit(self) -> None:
        raise NotImplementedError


class Producer(_Client, Generic[M]):
    """A blocking :class:`mlops_async.Producer`: same arguments, same guarantees.

    ``send`` returns once the message is queued (waiting while the buffer is
    full), ``flush`` once the broker confirmed everything queued; ``close``
    (also on leaving a ``with`` block, and at interpreter exit) delivers what
    is queued first.
    """

    def __init__(self, url: str | None = None, *, topic: str | Sequence[str] | None = None,
                 schema: type[M] = MLOpsMessage, **options: Any) -> None:  # type: ignore[assignment]
        self._producer: AsyncProducer[M] = self._open(
            lambda: AsyncProducer(url, topic=topic, schema=schema, **options))

    @property
    def closed(self) -> bool:
        return self._portal is None

    def send(self, msg: M, *, topic: str | Sequence[str] | None = None,
             key: str | bytes | None = None, headers: Any = None, flush: bool = False) -> None:
        """Queue ``msg`` (with ``flush=True``: until the broker confirmed it)."""
        self._call(self._send, msg, topic, key, headers, flush)

    async def _send(self, msg: M, topic: Any, key: Any, headers: Any, flush: bool) -> None:
        await self._producer.send(msg, topic=topic, key=key, headers=headers, flush=flush)

    def send_many(self, msgs: Iterable[M], *, topic: str | Sequence[str] | None = None,
                  key: str | bytes | None = None, flush: bool = False) -> None:
        """Queue several messages in one call (one hop to the loop thread)."""
        self._call(self._send_many, list(msgs), topic, key, flush)

    async def _send_many(self, msgs: list[M], topic: Any, key: Any, flush: bool) -> None:
        await self._producer.send_many(msgs, topic=topic, key=key, flush=flush)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued is confirmed (see :meth:`mlops_async.Producer.flush`)."""
        self._call(self._producer.flush, timeout)

    def task(self, correlation_id: str, *, topic: str = "status", creator: str | None = None,
             stage: str | None = None, webhook: Webhook | None = None) -> Task:
        """Report a task's status on ``topic``: ``with producer.task(cid) as t: ...``."""
        status = task_status(self._producer, correlation_id, topic=topic, creator=creator,
                             stage=stage, webhook=webhook)
        return Task(self, status)

    def stats(self) -> dict[str, Any]:
        return self._producer.stats()

    def close(self) -> None:
        """Deliver what is queued, then release everything; safe to call twice."""
        if self._portal is None:
            return
        try:
            self._call(self._producer.close)
        finally:
            self._done()

    def _close_at_exit(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Consumer(_Client, Generic[M]):
    """A blocking :class:`mlops_async.Consumer`: same arguments, same guarantees.

    ``for msg in consumer`` blocks for each message; a message is acknowledged
    when the next one is asked for, or at ``close()``. Leaving a ``with`` block
    with an exception (Ctrl-C included), or the interpreter exiting with the
    consumer open, leaves the message in hand unacknowledged: it is delivered
    again. One thread at a time talks to the consumer; others wait their turn.
    """

    def __init__(self, url: str | None = None, *, topic: str | Sequence[str] | None = None,
                 group: str | None = None, schema: type[M] = MLOpsMessage,  # type: ignore[assignment]
                 **options: Any) -> None:
        self._turn = threading.Lock()
        self._consumer: AsyncConsumer[M] = self._open(
            lambda: AsyncConsumer(url, topic=topic, group=group, schema=schema, **options))

    def __iter__(self) -> Iterator[M]:
        return self

    def __next__(self) -> M:
        with self._turn:
            try:
                return self._call(self._consumer.__anext__)
            except StopAsyncIteration:
                raise StopIteration from None

    def get_messages(self, filter: Callable[[M], bool] | None = None, *,
                     max_messages: int | None = None, timeout: float | None = None) -> list[M]:
        """One poll: what arrived within ``timeout`` (as the async ``get_messages``)."""
        with self._turn:
            return self._call(self._get, filter, max_messages, timeout)

    async def _get(self, filter: Any, max_messages: int | None, timeout: float | None) -> list[M]:
        return await self._consumer.get_messages(filter, max_messages=max_messages,
                                                 timeout=timeout)

    def commit(self) -> None:
        """Acknowledge every message handed out so far."""
        with self._turn:
            self._call(self._consumer.commit)

    def stats(self) -> dict[str, Any]:
        return self._consumer.stats()

    def close(self, *, processed: bool = True) -> None:
        """Acknowledge what was processed (``processed=False``: leave the message in hand
        for redelivery), leave the group; safe to call twice."""
        if self._portal is None:
            return
        try:
            self._call(self._close, processed)
        finally:
            self._done()

    async def _close(self, processed: bool) -> None:
        await self._consumer.close(processed=processed)

    def _close_at_exit(self) -> None:
        self.close(processed=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(processed=exc is None)


class Task:
    """Blocking task status reports: START on entry, PROGRESS, then COMPLETE or FAILURE.

    See :mod:`mlops_async.status`; leaving the block with an exception (Ctrl-C
    included) reports FAILURE with its type and message, and re-raises.
    """

    def __init__(self, client: Producer[Any], status: TaskStatus,
                 owned: bool = False) -> None:
        self._client = client
        self.status = status
        self._owned = owned  # made by task(): its producer closes with it

    def progress(self, percent: float | None = None, message: str | None = None,
                 **data: Any) -> None:
        """Send a PROGRESS report (``percent`` and any JSON-able data)."""
        self._client._call(self._progress, percent, message, data)

    async def _progress(self, percent: float | None, message: str | None,
                        data: dict[str, Any]) -> None:
        await self.status.progress(percent, message, **data)

    def result(self, **data: Any) -> None:
        """Data to attach to the final report."""
        self.status.result(**data)

    def complete(self, message: str = "completed", **data: Any) -> None:
        """Set the COMPLETE report's message and data (sent when the block ends)."""
        self.status.complete(message, **data)

    def fail(self, message: str = "failed", **data: Any) -> None:
        """Report FAILURE with ``message`` when the block ends, without raising."""
        self.status.fail(message, **data)

    def __enter__(self) -> Self:
        try:
            self._client._call(self.status.__aenter__)
        except BaseException:
            if self._owned:
                self._client.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._client._call(self.status.__aexit__, exc_type, exc, tb)
        finally:
            if self._owned:
                self._client.close()


def task(correlation_id: str, url: str | None = None, *, topic: str = "status",
         creator: str | None = None, stage: str | None = None,
         webhook: Webhook | None = None, **options: Any) -> Task:
    """Report one task's status from synchronous code, on a producer of its own.

    ``with task("run-42", "kafka://localhost:9092", creator="trainer") as t:
    t.progress(50)``; ``options`` go to the producer.
    """
    producer: Producer[MLOpsMessage] = Producer(url, **options)
    status = task_status(producer._producer, correlation_id, topic=topic, creator=creator,
                         stage=stage, webhook=webhook)
    return Task(producer, status, owned=True)
