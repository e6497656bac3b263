"""Task status reporting: started / progress / failed / completed, keyed by a correlation id.

```python
async with task_status(producer, correlation_id, creator="trainer", stage="TRAIN") as task:
    await task.progress(percent=50, loss=0.31)
    task.result(accuracy=0.94)          # attached to COMPLETE
```

On entry a START message goes to the status topic; ``progress()`` sends
PROGRESS; leaving the block sends COMPLETE with the result data, or FAILURE
with the error's type and message (never the traceback) and re-raises. Every
status is an MLOpsMessage carrying the correlation id. The same reports can
be POSTed as JSON to a webhook: in the background, with a timeout and
retries, never holding up the task; the bearer token comes from the
``MLOPS_STATUS_TOKEN`` environment variable and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar

import msgspec

from .errors import BusError, MissingDependency
from .message import MessageType, MLOpsMessage, _frozen_args, _text, new_id

__all__ = ["TaskStatus", "Webhook", "reports_status", "task_status"]

log = logging.getLogger("mlops_async.status")
_now = time.time

P = ParamSpec("P")
R = TypeVar("R")

TOKEN_ENV = "MLOPS_STATUS_TOKEN"
_JSON = msgspec.json.Encoder()


class Webhook:
    """POSTs status messages as JSON to ``url``, from a bounded background queue.

    A slow or dead endpoint never blocks the task: when the queue (``max_pending``)
    is full, the oldest report is dropped and counted in ``dropped`` (the bus
    copy of every status is still delivered). Each POST is retried with backoff
    up to ``retries`` times.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 3,
                 max_pending: int = 1000) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependency(
                "status webhooks need httpx: pip install 'mlops-async[status]'"
            ) from exc
        self.url = url
        self.retries = retries
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_pending)
        token = os.environ.get(TOKEN_ENV)
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def __repr__(self) -> str:  # the token stays out of reprs and logs
        return f"Webhook({self.url!r})"

    def post(self, msg: MLOpsMessage) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        body = _JSON.encode(msg)
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(body)

    async def _run(self) -> None:
        while True:
            body = await self._queue.get()
            for attempt in range(self.retries + 1):
                try:
                    resp = await self._client.post(self.url, content=body)
                    if resp.status_code < 500:
                        if resp.status_code >= 400:
                            self.failed += 1
                            log.warning("status webhook answered %d", resp.status_code)
                        else:
                            self.sent += 1
                        break
                except Exception as exc:  # network errors: retry, then count
                    log.debug("status webhook attempt %d: %r", attempt + 1, exc)
                if attempt == self.retries:
                    self.failed += 1
                    log.warning("status webhook unreachable after %d attempts", attempt + 1)
                else:
                    await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
            self._queue.task_done()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until queued reports were posted."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._client.aclose()


class Sender(Protocol):
    """What status reporting needs of a producer (a :class:`~mlops_async.Producer`)."""

    async def send(self, msg: Any, *, topic: Any = ..., key: Any = ...) -> None: ...

    async def flush(self, timeout: float | None = None) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class TaskStatus:
    """One task's reports; use :func:`task_status` to create it.

    Reporting never holds up the task: START and PROGRESS are queued, and the
    final report waits for confirmation only while the broker answers (within
    the producer's ``flush_timeout``); during an outage it stays queued.
    """

    def __init__(self, producer: Sender, correlation_id: str, *, topic: str,
                 creator: str | None, stage: str | None, webhook: Webhook | None) -> None:
        self.producer = producer
        self.topic = topic
        self.webhook = webhook
        self.correlation_id = correlation_id
        self.creator = creator
        self.stage = stage
        self.data: dict[str, Any] = {}
        self._final: tuple[MessageType, str] | None = None  # set by complete() / fail()

    # What every report carries is checked and converted once, when set: each report
    # is then built directly, with the fields MessageBuilder would give it.
    @property
    def correlation_id(self) -> str:
        return self._correlation_id

    @correlation_id.setter
    def correlation_id(self, value: str) -> None:
        self._cid = value if value.__class__ is str else _text(value)
        self._key = (self._cid or "").encode()
        self._correlation_id = value

    @property
    def creator(self) -> str | None:
        return self._creator_given

    @creator.setter
    def creator(self, value: str | None) -> None:
        self._creator = (value if value.__class__ is str else _text(value)) if value else None
        self._creator_given = value

    @property
    def stage(self) -> str | None:
        return self._stage_given

    @stage.setter
    def stage(self, value: str | None) -> None:
        self._stage = (value if value.__class__ is str else _text(value)) if value else None
        self._stage_given = value

    def _message(self, kind: MessageType, text: str | None, args: dict[str, Any]) -> MLOpsMessage:
        return MLOpsMessage(
            id=new_id(), created_at=_now(), msg_type=kind, creator_type=self._creator,
            creator=self._creator,
            user_message=(text if text.__class__ is str else _text(text)) if text else None,
            stage=self._stage, correlation_id=self._cid, additional_arguments=_frozen_args(args))

    async def _report(self, kind: MessageType, text: str | None, args: dict[str, Any],
                      *, confirm: bool = False) -> None:
        # The data travels as one dict, so any key a task chooses ("text", "kind") is fine.
        msg = self._message(kind, text, args)
        await self.producer.send(msg, topic=self.topic, key=self._key)
        if self.webhook is not None:
            self.webhook.post(msg)
        if confirm and not self.producer.stats().get("outage"):
            try:
                await self.producer.flush()
            except BusError as exc:  # a status report must never mask the task's outcome
                log.warning("task %s: final status not confirmed: %s", self.correlation_id, exc)

    async def progress(self, percent: float | None = None, message: str | None = None,
                       **data: Any) -> None:
        """Send a PROGRESS report (``percent`` and any JSON-able data)."""
        if percent is not None:
            data["percent"] = percent
        # _report() inlined: the report most tasks send many times.
        msg = self._message(MessageType.PROGRESS, message, data)
        await self.producer.send(msg, topic=self.topic, key=self._key)
        if self.webhook is not None:
            self.webhook.post(msg)

    def result(self, **data: Any) -> None:
        """Data to attach to the final report (COMPLETE, or FAILURE if the task fails)."""
        self.data.update(data)

    def complete(self, message: str = "completed", **data: Any) -> None:
        """Set the COMPLETE report's message and add ``data`` (sent when the block ends)."""
        self.data.update(data)
        self._final = (MessageType.COMPLETE, message)

    def fail(self, message: str = "failed", **data: Any) -> None:
        """Report FAILURE with ``message`` and ``data`` when the block ends, without raising.

        For a task that handled its error itself; an exception leaving the
        block reports FAILURE on its own (with the error's type and message).
        """
        self.data.update(data)
        self._final = (MessageType.FAILURE, message)

    async def __aenter__(self) -> TaskStatus:
        await self._report(MessageType.START, "started", {})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            kind, text = self._final or (MessageType.COMPLETE, "completed")
            await self._report(kind, text, self.data, confirm=True)
            return
        if isinstance(exc, asyncio.CancelledError):
            # Queued, not confirmed: the cancellation goes on at once (the producer's
            # flush or close delivers the report).
            text, error_type, error, confirm = "cancelled", "CancelledError", "cancelled", False
        else:
            # Type and message only: tracebacks can carry paths and secrets.
            text, error_type, error, confirm = "failed", type(exc).__name__, str(exc)[:2000], True
        try:
            await self._report(MessageType.FAILURE, text,
                               {**self.data, "error_type": error_type, "error": error},
                               confirm=confirm)
        except BusError as report_exc:  # the task's own error is the one to propagate
            log.warning("task %s: FAILURE report not sent: %s", self.correlation_id, report_exc)


def task_status(producer: Sender, correlation_id: str, *, topic: str = "status",
                creator: str | None = None, stage: str | None = None,
                webhook: Webhook | None = None) -> TaskStatus:
    """Report START/PROGRESS/COMPLETE/FAILURE of one task on ``topic``."""
    return TaskStatus(producer, correlation_id, topic=topic, creator=creator, stage=stage,
                      webhook=webhook)


def reports_status(producer: Sender, *, topic: str = "status", creator: str | None = None,
                   stage: str | None = None, webhook: Webhook | None = None,
                   ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorator form: the wrapped coroutine takes ``correlation_id=`` as a keyword.

    A dict it returns is attached to COMPLETE; an exception sends FAILURE.
    """

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            cid = kwargs.get("correlation_id")
            if not isinstance(cid, str):
                raise TypeError(f"{fn.__name__} needs correlation_id='...' to report status")
            async with task_status(producer, cid, topic=topic, creator=creator or fn.__name__,
                                   stage=stage, webhook=webhook) as task:
                out = await fn(*args, **kwargs)
                if isinstance(out, dict):
                    task.result(**out)
                return out

        return run

    return wrap
