"""One OS thread per librdkafka client, and bounded waits for what it does.

librdkafka's calls that wait (``consume``, ``flush``, ``commit``, metadata)
must never run on the event loop. Each client gets a single-thread executor,
so its calls run in the order they were asked for and never race each other;
the loop awaits their results, always with a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import BusUnavailable

__all__ = ["ClientThread", "bounded"]

T = TypeVar("T")


class ClientThread:
    """Runs one client's blocking calls in order, off the event loop."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"mlops-{name}")

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` on the thread; the future resolves on the running loop."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        """Stop taking work; a call in progress finishes on its own (never waited for)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


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
