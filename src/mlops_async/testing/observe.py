"""What a TestApp observes: the handlers' calls, and the queues the apps write."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..app import App
from ..consumer import Consumer
from ..deadletter import DeadLetter
from ..queues import handler_schema, schema_of
from ..signals import Ack, Reject, Retry

__all__ = ["SIGNALS", "Call", "Collector", "recording", "written_queues"]

#: Outcome signals are decisions, not failures: they are not listed in ``errors``.
SIGNALS = (Ack, Reject, Retry)


@dataclass(frozen=True)
class Call:
    """One call of a handler: its input (a list for a batch handler), and what came of it."""

    handler: str
    input: Any
    result: Any = None
    error: BaseException | None = None


class Collector:
    """Reads one queue the app writes, in order, into a bounded buffer the test takes from."""

    def __init__(self, name: str, topic: str, schema: type[Any], keep: int) -> None:
        self.name = name
        self.topic = topic
        self.schema = schema
        self.seen: deque[Any] = deque(maxlen=keep)
        self.unread: asyncio.Queue[Any] = asyncio.Queue(keep)
        self.failure: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self, consumer: Consumer[Any]) -> None:
        try:
            async for msg in consumer:
                if self.unread.full():  # bounded, and loud: the test must read or raise keep
                    raise OverflowError(
                        f"more than {self.unread.maxsize} messages on queue {self.name!r} "
                        f"not taken with next(): take them, or raise TestApp(keep=...)")
                self.seen.append(msg)
                self.unread.put_nowait(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # shown to the test by next() and drain()
            self.failure = exc


def recording(name: str, fn: Callable[[Any], Any], calls: deque[Call]) -> Callable[[Any], Any]:
    """``fn`` that appends a :class:`Call` to ``calls`` for each call (sync or async, as ``fn``)."""
    if inspect.iscoroutinefunction(fn):
        async def record_async(msg: Any) -> Any:
            try:
                result = await fn(msg)
            except BaseException as exc:
                calls.append(Call(name, msg, error=exc))
                raise
            calls.append(Call(name, msg, result))
            return result
        return functools.update_wrapper(record_async, fn)

    def record(msg: Any) -> Any:  # runs in the app's thread pool: deque appends are atomic
        try:
            result = fn(msg)
        except BaseException as exc:
            calls.append(Call(name, msg, error=exc))
            raise
        calls.append(Call(name, msg, result))
        return result
    return functools.update_wrapper(record, fn)


def written_queues(apps: Iterable[App]) -> Iterable[tuple[str, str, type[Any]]]:
    """(queue name, topic, schema) of every queue the apps write: outputs, dead letters."""
    done: set[str] = set()
    for app in apps:
        hinted = {r.input: handler_schema(r.fn, batch=r.batch_size is not None)
                  for r in app.routes}
        writers = [*app.routes, *app.sources]
        for route in writers:
            names = [*route.outputs, *([route.dead_letter] if route.dead_letter else [])]
            for name in names:
                if name in done:
                    continue
                done.add(name)
                q = app.queues[name]
                if name == route.dead_letter:
                    schema: type[Any] = DeadLetter
                elif q.schema is not None or hinted.get(name) is not None:
                    schema = schema_of(q, hinted.get(name))
                else:
                    schema = dict  # no declared schema: plain objects (see next(schema=))
                yield name, q.topic, schema
