"""Dispatch: one pump per handler reads its input; a pool of workers runs the handlers.

Messages with a key are pinned to one worker (``hash(key) % workers``), so
messages of one key are handled one after another, in arrival order; keyless
ones go to whichever worker is free. A pump that fails is restarted with
backoff; one that cannot go on reports to the app, which stops.

A pump reads only what its workers can start within the consumer's read
window (``prefetch_window``): its free workers (a batch handler: one batch),
and as many more as the workers' measured pace gets through in the window.
So a fast handler's pump reads full batches, and the replicas of a slow
stage share its inputs instead of one replica holding them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .._client import Backoff
from ..backends import Delivery
from ..errors import BusError, DecodeError, MessageTooLarge
from ..metrics import Metrics
from ..window import ReadWindow
from .route import Route

__all__ = ["PUMP_MAX_RESTARTS", "RUN", "Dispatcher", "Slots"]

log = logging.getLogger("mlops_async.app")

#: Consecutive failures after which a pump gives up and stops the app.
PUMP_MAX_RESTARTS = 5

#: At most this many inputs a worker takes at once (a run: see Outcomes.handle_run).
RUN = 64

# A pump's read window has no cap of its own: the consumer's prefetch caps each fetch.
_MOST = 1 << 20

Handle = Callable[[Route, Any, Delivery], Awaitable[None]]
HandleRun = Callable[[list[tuple[Route, Delivery]]], Awaitable[None]]
Invalid = Callable[[Route, Delivery, DecodeError | MessageTooLarge], Awaitable[None]]
HandleBatch = Callable[[Route, list[Any], list[Delivery]], Awaitable[None]]
DeadLetter = Callable[[Route, Delivery, BaseException, int, str], Awaitable[None]]


class Slots:
    """A counting semaphore with less bookkeeping than asyncio's, for per-message use."""

    __slots__ = ("free", "waiters")

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot just as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the waiter
                return
        self.free += 1

    def release_many(self, n: int) -> None:
        if not self.waiters:
            self.free += n
            return
        for _ in range(n):
            self.release()


class _Worker:
    """One of ``max_concurrency`` coroutines that run handlers, fed by the pumps."""

    __slots__ = ("busy", "queue", "task", "wake")

    def __init__(self) -> None:
        self.queue: deque[tuple[Route, Delivery]] = deque()  # not decoded yet
        self.wake = asyncio.Event()
        self.busy = 0  # inputs taken and not finished
        self.task: asyncio.Task[None] | None = None


class Dispatcher:
    """Pumps and workers of one app (see the module docstring)."""

    def __init__(
        self,
        app: str,
        max_concurrency: int,
        *,
        handle: Handle,
        handle_batch: HandleBatch,
        invalid: Invalid,
        handle_run: HandleRun | None = None,
        dead_letter: DeadLetter,
        fail: Callable[[BaseException, str], None],
        sleep: Callable[[float], Awaitable[Any]],
        metrics: Metrics | None,
    ) -> None:
        self.app = app
        self._handle = handle
        self._handle_batch = handle_batch
        # Workers take runs of inputs (one settle per run) unless the caller needs
        # each input on its own (tracing: a span per input).
        self._handle_run = handle_run
        self._invalid = invalid
        self._batch_busy: set[str] = set()  # batch handlers running a batch right now
        self._draining = False
        self._dead_letter = dead_letter
        self._fail = fail
        self._sleep = sleep
        self._metrics = metrics
        # Bounds messages handed to workers but not finished (running or queued);
        # room for a few per worker so the pump hands over in runs, not one by one.
        self._sem = Slots(max(4 * max_concurrency, 256))
        self._workers = [_Worker() for _ in range(max_concurrency)]
        self._shared: deque[tuple[Route, Delivery]] = deque()  # keyless inputs
        self._idle: list[_Worker] = []
        self._share = 1  # how many keyless inputs a worker takes at once (set by the pumps)
        self._routes: list[Route] = []

    def start(self, routes: list[Route]) -> None:
        self._routes = routes
        for i, w in enumerate(self._workers):
            w.task = asyncio.create_task(self._work(w), name=f"{self.app}.worker{i}")
        for route in routes:
            route.pump = asyncio.create_task(self._pump(route), name=f"{self.app}.{route.name}")

    async def stop_reading(self, drain_timeout: float) -> None:
        """Stop fetching; a batch handler running a batch may finish it within ``drain_timeout``."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self._batch_busy and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        pumps = [r.pump for r in self._routes if r.pump is not None]
        for t in pumps:
            t.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def stop_workers(self) -> None:
        workers = [w.task for w in self._workers if w.task is not None]
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def idle(self) -> bool:
        """No batch handler is running a batch."""
        return not self._batch_busy

    def unfinished(self) -> int:
        return len(self._shared) + sum(len(w.queue) + w.busy for w in self._workers)

    def alive(self) -> tuple[dict[str, bool], int, int]:
        """(pump alive per handler, live workers, workers)."""
        pumps = {r.name: r.pump is not None and not r.pump.done() for r in self._routes}
        live = sum(1 for w in self._workers if w.task is not None and not w.task.done())
        return pumps, live, len(self._workers)

    # -- pumps ------------------------------------------------------------------

    async def _pump(self, route: Route) -> None:
        """Feed workers from ``route``'s consumer; restarted with backoff if it fails.

        Nothing ends it silently: an unexpected error is logged with its
        traceback and the pump restarts; a non-retriable one, or
        ``PUMP_MAX_RESTARTS`` failures in a row, stops the app.
        """
        backoff = Backoff(base=0.2, cap=10.0)
        failures = 0
        feed = self._feed if route.batch_size is None else self._feed_batches
        while True:
            try:
                await feed(route, backoff)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                route.last_error = f"{type(exc).__name__}: {exc}"
                if self._metrics is not None:
                    self._metrics.consumed_fail(route.input)
                fatal = getattr(exc, "retriable", True) is False and isinstance(exc, BusError)
                if fatal or failures >= PUMP_MAX_RESTARTS:
                    self._fail(exc, f"handler {route.name} cannot read {route.input}")
                    return
                log.error("app %s: reading %s for handler %s failed (%d in a row); "
                          "restarting", self.app, route.input, route.name, failures,
                          exc_info=exc)
                await self._sleep(backoff.next_delay())

    async def _feed(self, route: Route, backoff: Backoff) -> None:
        consumer = route.consumer
        assert consumer is not None
        workers, shared, idle, sem = self._workers, self._shared, self._idle, self._sem
        n = len(workers)
        window = route.window = ReadWindow(consumer.prefetch_window, _MOST)
        while True:
            # Free workers, or what the workers' pace starts within the window.
            room = max(n, window.room(0)) - route.held
            if room <= 0:
                await self._room_freed(route)
                continue
            # What is buffered, at once: one call and no wait per message. Workers
            # decode each input when they get to it (decode, handle, encode in a row).
            ds = await consumer.receive_deliveries(min(RUN, room), 0.0, room=room)
            if not ds:
                return  # closed
            backoff.reset()
            k = len(ds)
            route.held += k
            if sem.free >= k and not sem.waiters and all(d.key is None for d in ds):
                # The common case in one pass: room for all, no keys.
                sem.free -= k
                shared.extend([(route, d) for d in ds])
                for _ in range(min(k, len(idle))):
                    idle.pop().wake.set()
            else:
                for d in ds:
                    if sem.free > 0 and not sem.waiters:
                        sem.free -= 1  # Slots.acquire's fast path, without a coroutine
                    else:
                        await sem.acquire()
                    if d.key is not None:
                        # Same key, same worker: handled one after another, in order.
                        w = workers[hash(d.key) % n]
                        w.queue.append((route, d))
                        w.wake.set()
                    else:
                        shared.append((route, d))
                        if idle:
                            idle.pop().wake.set()
            # Each worker's share of the keyless inputs waiting now, taken as one run.
            self._share = min(RUN, max(1, -(-len(shared) // n)))

    async def _feed_batches(self, route: Route, backoff: Backoff) -> None:
        """A batch handler's pump: take a batch, run it, then take the next (in order)."""
        consumer = route.consumer
        assert consumer is not None and route.batch_size is not None
        size = route.batch_size
        window = route.window = ReadWindow(consumer.prefetch_window, _MOST)
        while not self._draining:
            try:
                # This batch, and as many more as the handler's pace runs in the window.
                msgs, ds = await consumer.receive_batch(
                    size, route.batch_wait, room=max(size, window.room(0)))
            except (DecodeError, MessageTooLarge) as exc:
                bad = exc.delivery
                assert isinstance(bad, Delivery)
                await self._dead_letter(route, bad, exc, 1, "invalid")
                await consumer.ack(bad)
                continue
            if not msgs:
                return  # closed
            backoff.reset()
            self._batch_busy.add(route.name)
            started = time.monotonic()
            try:
                await self._handle_batch(route, msgs, ds)
            finally:
                self._batch_busy.discard(route.name)
            window.observe(time.monotonic() - started, len(msgs))

    # -- workers ----------------------------------------------------------------

    async def _work(self, w: _Worker) -> None:
        """Run handlers: this worker's keyed messages first, then any keyless one."""
        queue, shared, idle = w.queue, self._shared, self._idle
        handle_run = self._handle_run
        while True:
            if handle_run is not None and (queue or shared):
                # A run: this worker's keyed inputs, or its share of the keyless ones
                # (so the other workers get theirs and concurrency stays as it was).
                if queue:
                    k = min(len(queue), RUN)
                    items = [queue.popleft() for _ in range(k)]
                else:
                    k = min(len(shared), self._share)
                    items = [shared.popleft() for _ in range(k)]
                w.busy = k
                started = time.monotonic()
                try:
                    await handle_run(items)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Unsettled inputs stay unacknowledged (delivered again), never dropped.
                    items[0][0].last_error = "handling failed; see the log"
                    log.exception("app %s: handling a run of %d input(s) failed", self.app, k)
                finally:
                    w.busy = 0
                    self._sem.release_many(k)
                    self._finished(items, time.monotonic() - started)
                continue
            if queue:
                route, d = queue.popleft()
            elif shared:
                route, d = shared.popleft()
            else:
                w.wake.clear()
                idle.append(w)
                await w.wake.wait()
                if w in idle:  # woken for a keyed message, not popped by the pump
                    idle.remove(w)
                continue
            w.busy = 1
            started = time.monotonic()
            try:
                assert route.consumer is not None
                try:
                    msg = route.consumer.decode(d)
                except (DecodeError, MessageTooLarge) as exc:
                    await self._invalid(route, d, exc)
                else:
                    await self._handle(route, msg, d)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The input stays unacknowledged (delivered again), never dropped silently.
                route.last_error = "handling failed; see the log"
                log.exception("app %s: handling %s failed", self.app, d.where())
            finally:
                w.busy = 0
                self._sem.release()
                self._finished([(route, d)], time.monotonic() - started)

    def _finished(self, items: list[tuple[Route, Delivery]], elapsed: float) -> None:
        """Inputs a worker finished: their pumps may read more, and the workers' pace
        (per input, over all workers, as the consumer's window counts it) is folded in."""
        route = items[0][0]
        if len(self._routes) == 1:
            route.held -= len(items)
        else:
            for r, _ in items:
                r.held -= 1
        if route.window is not None:
            route.window.observe(elapsed, len(items) * len(self._workers))
        for r in self._routes if len(self._routes) > 1 else (route,):
            fut = r.room_freed
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _room_freed(self, route: Route) -> None:
        """Wait until a worker finishes one of ``route``'s inputs."""
        fut = route.room_freed = asyncio.get_running_loop().create_future()
        try:
            await fut
        finally:
            route.room_freed = None
