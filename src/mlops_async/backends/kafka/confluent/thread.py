"""One OS thread per librdkafka client, and bounded waits for what it does.

librdkafka's calls that wait (``consume``, ``flush``, ``commit``, metadata)
must never run on the event loop. Each client gets threads of its own (one,
unless it asks for more), so its calls run in the order they were asked for
and never race each other; the loop awaits their results, always with a
bound. The threads are daemons: a program that never closes its Producer or
Consumer still exits (``concurrent.futures`` would join its workers at exit,
and a producer's report loop never ends by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ....errors import BusUnavailable

__all__ = ["ClientThread", "bounded", "quiet"]

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the caller gave up (cancelled): nobody wants the result
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


def quiet(fut: asyncio.Future[Any]) -> None:
    """Done callback for a job nobody awaits: its exception is retrieved, never logged
    as "never retrieved" (what it did is reported by whoever needs it)."""
    if not fut.cancelled():
        fut.exception()


class ClientThread:
    """Runs one client's blocking calls in order, off the event loop, on daemon threads."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"mlops-{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = self._stopped = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` on the thread; the future resolves on the running loop.

        Cancelling the future does not stop the call (it cannot be interrupted);
        its result is then dropped. Raises RuntimeError after :meth:`shutdown`.
        """
        if self._stopped:
            raise RuntimeError("the client's thread is shut down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def shutdown(self) -> None:
        """Stop taking work; jobs queued before run, a call in progress ends on its own."""
        if self._stopped:
            return
        self._stopped = True
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fut, fn, args = job
            result: Any = None
            exc: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as e:  # handed to the awaiting coroutine, never lost here
                exc = e
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            del job, fut, result, exc  # hold nothing between jobs


async def bounded(fut: asyncio.Future[T], timeout: float, what: str) -> T:
    """The thread's result, waiting at most ``timeout`` s.

    Raises :class:`BusUnavailable` when no answer came in time. The call goes
    on in its thread (it cannot be interrupted), so it is shielded: a
    cancelled caller leaves a finished call behind, never half a call.
    """
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(fut)
    except TimeoutError as exc:
        raise BusUnavailable(f"{what}: no answer within {timeout:g} s") from exc
