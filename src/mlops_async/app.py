"""The stream engine: handlers that consume one queue and publish to many.

```python
app = App("feature_worker", url="kafka://localhost:9092")

@app.handler(input="raw_events", outputs=["features", "alerts"], dead_letter="raw_events.dlq")
async def featurize(event: RawEvent) -> list[tuple[str, msgspec.Struct]] | None:
    ...
```

For every input message: decode into the input queue's schema (failures go
straight to the dead-letter queue), call the handler (retried with
exponential backoff and jitter; see :mod:`mlops_async.signals` for explicit
outcomes), check every output against its queue's declaration and schema,
publish the outputs and wait until the broker confirmed them, and only then
acknowledge the input (at-least-once end to end). Up to ``max_concurrency``
messages are in flight per app; messages with the same key are handled one
after another, in order. Dead letters keep the original bytes verbatim.

Shutdown (``await app.stop()``, SIGINT or SIGTERM under :meth:`App.run`):
stop fetching, let in-flight messages finish within ``drain_timeout``,
flush producers, close. Anything unfinished stays unacknowledged and is
delivered again. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import random
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ._client import Backoff
from .admin import Admin
from .backends import Delivery
from .consumer import Consumer
from .deadletter import make_dead_letter
from .endpoint import resolve_url
from .errors import BusError, ConfigurationError, DecodeError, MessageTooLarge
from .metrics import Metrics
from .producer import Producer
from .queues import AppConfig, Queue, load_config, schema_of, url_of
from .signals import Ack, Retry

__all__ = ["App", "AppFailed", "OutputError"]

log = logging.getLogger("mlops_async.app")

Handler = Callable[[Any], Any]


class OutputError(BusError):
    """A handler returned something it may not publish (undeclared queue, wrong schema)."""


class AppFailed(BusError):
    """The app stopped because one of its parts could not go on (see ``__cause__``)."""


#: Consecutive failures after which a pump gives up and stops the app.
PUMP_MAX_RESTARTS = 5


@dataclass
class _Route:
    name: str
    fn: Handler
    is_async: bool
    input: str
    outputs: tuple[str, ...]
    dead_letter: str
    retries: int
    backoff: float
    backoff_max: float
    consumer: Consumer[Any] | None = None
    pump: asyncio.Task[None] | None = None
    last_error: str | None = None


class _Slots:
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


class _Worker:
    """One of ``max_concurrency`` coroutines that run handlers, fed by the pumps."""

    __slots__ = ("busy", "queue", "task", "wake")

    def __init__(self) -> None:
        self.queue: deque[tuple[_Route, Any, Delivery]] = deque()
        self.wake = asyncio.Event()
        self.busy = False
        self.task: asyncio.Task[None] | None = None


class App:
    """A worker made of handlers; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        config: str | Path | AppConfig | None = None,
        queues: Iterable[Queue] = (),
        group: str | None = None,
        max_concurrency: int = 16,
        max_unconfirmed: int = 4096,
        drain_timeout: float = 30.0,
        sync_workers: int = 4,
        metrics: Metrics | bool = False,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        cfg = load_config(config) if isinstance(config, str | Path) else config
        self.url = url or (cfg.url if cfg else None)
        self.queues: dict[str, Queue] = {}
        for q in [*(cfg.queues if cfg else ()), *queues]:
            self.queues[q.name] = q
        self.group = group or name
        self.max_concurrency = max_concurrency
        self.max_unconfirmed = max_unconfirmed
        self.drain_timeout = drain_timeout
        self.sync_workers = sync_workers
        self.metrics: Metrics | None = (
            Metrics(name) if metrics is True else metrics if isinstance(metrics, Metrics) else None
        )
        self._sleep = sleep
        self._consumer_options = consumer_options or {}
        self._routes: list[_Route] = []
        self._producers: dict[str, Producer[Any]] = {}  # by URL
        self._queue_producer: dict[str, Producer[Any]] = {}  # by queue name
        self._schemas: dict[str, type[Any]] = {}
        self._workers: list[_Worker] = []
        self._shared: deque[tuple[_Route, Any, Delivery]] = deque()  # keyless messages
        self._idle: list[_Worker] = []
        # Per producer: (last seq, first seq, route, delivery, start time) awaiting confirmation.
        self._awaiting: dict[Producer[Any], deque[tuple[int, int, _Route, Delivery, float]]] = {}
        self._sem: _Slots | None = None
        self._unconfirmed: _Slots | None = None
        self._finishers: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._signals = 0
        self._failure: BaseException | None = None
        self._stopper: asyncio.Task[None] | None = None

    # -- declaration --------------------------------------------------------

    def queue(self, name: str, **fields: Any) -> Queue:
        """Declare a queue in code (same fields as in a queues file)."""
        q = Queue(name=name, **fields)
        self.queues[name] = q
        return q

    def handler(
        self,
        *,
        input: str,
        outputs: Sequence[str] = (),
        dead_letter: str | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        backoff_max: float = 30.0,
        name: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for ``input``; it may publish only to ``outputs``.

        ``dead_letter`` is a queue name or topic (default ``<input topic>.dlq``).
        """
        if self._started:
            raise ConfigurationError("handlers must be registered before the app starts")

        def register(fn: Handler) -> Handler:
            for q in (input, *outputs):
                self.queues.setdefault(q, Queue(name=q))
            in_topic = self.queues[input].topic
            dlq = dead_letter or f"{in_topic}.dlq"
            self.queues.setdefault(dlq, Queue(name=dlq))
            self._routes.append(_Route(
                name or fn.__name__, fn, inspect.iscoroutinefunction(fn), input, tuple(outputs),
                dlq, retries, backoff, backoff_max,
            ))
            return fn

        return register

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open consumers and producers and start fetching."""
        if self._started:
            return
        if not self._routes:
            raise ConfigurationError(f"app {self.name!r} has no handlers")
        self._started = True
        self._stopped = asyncio.Event()
        # Bounds messages handed to workers but not finished (running or queued);
        # room for a few per worker so the pump hands over in runs, not one by one.
        self._sem = _Slots(max(4 * self.max_concurrency, 256))
        self._unconfirmed = _Slots(self.max_unconfirmed)
        self._executor = ThreadPoolExecutor(self.sync_workers, thread_name_prefix=self.name)
        default = await resolve_url(self.url)
        for name, q in self.queues.items():
            self._schemas[name] = schema_of(q)
        for route in self._routes:
            for qname in (*route.outputs, route.dead_letter):
                url = url_of(self.queues[qname], default) or default
                if url not in self._producers:
                    producer: Producer[Any] = Producer(url)
                    await producer.start()
                    self._producers[url] = producer
                self._queue_producer[qname] = self._producers[url]
            q = self.queues[route.input]
            options: dict[str, Any] = {"auto_offset_reset": "earliest",
                                       **self._consumer_options, **q.options}
            route.consumer = Consumer(
                url_of(q, default) or default, topic=q.topic, group=self.group,
                schema=self._schemas[route.input], commit="manual", on_invalid="raise",
                **options,
            )
            await route.consumer.start()
        for producer in self._producers.values():
            self._awaiting[producer] = deque()
            producer.add_confirm_listener(functools.partial(self._settled, producer))
        self._workers = [_Worker() for _ in range(self.max_concurrency)]
        for i, w in enumerate(self._workers):
            w.task = asyncio.create_task(self._work(w), name=f"{self.name}.worker{i}")
        for route in self._routes:
            route.pump = asyncio.create_task(self._pump(route), name=f"{self.name}.{route.name}")
        if self.metrics is not None:
            self._lag_task = asyncio.create_task(self._watch_lag(default))
        log.info("app %s started: %s", self.name, ", ".join(r.name for r in self._routes))

    async def stop(self) -> None:
        """Drain and close; safe to call twice."""
        if self._stopping or not self._started:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        try:
            pumps = [r.pump for r in self._routes if r.pump is not None]
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if self._lag_task is not None:
                self._lag_task.cancel()
                await asyncio.gather(self._lag_task, return_exceptions=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.drain_timeout
            # Polls worker state, bounded by the deadline.
            while self._unfinished() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            left = self._unfinished()
            if left:
                log.warning("app %s: %d message(s) not finished after %.0fs; they will be "
                            "delivered again", self.name, left, self.drain_timeout)
            workers = [w.task for w in self._workers if w.task is not None]
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Outputs still unconfirmed: deliver them, then acknowledge their inputs.
            for producer in self._producers.values():
                try:
                    async with asyncio.timeout(self.drain_timeout):
                        await producer.flush()
                except (TimeoutError, BusError) as exc:
                    log.warning("app %s: outputs not confirmed at stop: %r", self.name, exc)
            await asyncio.sleep(0)  # let confirmation callbacks schedule their finishers
            if self._finishers:
                await asyncio.wait(set(self._finishers), timeout=self.drain_timeout)
            for route in self._routes:
                if route.consumer is not None:
                    await route.consumer.close()
            for producer in self._producers.values():
                await producer.close()
            for t in list(self._finishers):
                t.cancel()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            assert self._stopped is not None
            self._stopped.set()
            log.info("app %s stopped", self.name)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, *, install_signals: bool = True) -> None:
        """Start, then run until :meth:`stop` or SIGINT/SIGTERM (a second one exits at once)."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.start()
            assert self._stopped is not None
            await self._stopped.wait()
        finally:
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await self.stop()
        if self._failure is not None:
            raise self._failure

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("app %s: %s received, draining (again to exit at once)", self.name,
                        sig.name)
            asyncio.get_running_loop().create_task(self.stop())
        else:
            log.error("app %s: second %s, exiting now", self.name, sig.name)
            os._exit(128 + int(sig))

    # -- the loop -------------------------------------------------------------

    async def _pump(self, route: _Route) -> None:
        """Feed workers from ``route``'s consumer; restarted with backoff if it fails.

        Nothing ends it silently: an unexpected error is logged with its
        traceback and the pump restarts; a non-retriable one, or
        ``PUMP_MAX_RESTARTS`` failures in a row, stops the app with
        :class:`AppFailed` (``mlops-async run`` then exits non-zero).
        """
        backoff = Backoff(base=0.2, cap=10.0)
        failures = 0
        while True:
            try:
                await self._feed(route, backoff)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                route.last_error = f"{type(exc).__name__}: {exc}"
                if self.metrics is not None:
                    self.metrics.consumed_fail(route.input)
                fatal = getattr(exc, "retriable", True) is False and isinstance(exc, BusError)
                if fatal or failures >= PUMP_MAX_RESTARTS:
                    self._fail(exc, f"handler {route.name} cannot read {route.input}")
                    return
                log.error("app %s: reading %s for handler %s failed (%d in a row); "
                          "restarting", self.name, route.input, route.name, failures,
                          exc_info=exc)
                await self._sleep(backoff.next_delay())

    async def _feed(self, route: _Route, backoff: Backoff) -> None:
        consumer = route.consumer
        assert consumer is not None and self._sem is not None
        workers = self._workers
        n = len(workers)
        while True:
            try:
                msg, d = await consumer.receive()
            except (DecodeError, MessageTooLarge) as exc:
                bad = exc.delivery
                assert isinstance(bad, Delivery)
                await self._dead_letter(route, bad, exc, 1, reason="invalid")
                await consumer.ack(bad)
                continue
            except StopAsyncIteration:
                return
            backoff.reset()
            await self._sem.acquire()
            if d.key is not None:
                # Same key, same worker: handled one after another, in arrival order.
                w = workers[hash(d.key) % n]
                w.queue.append((route, msg, d))
                w.wake.set()
            else:
                self._shared.append((route, msg, d))
                if self._idle:
                    self._idle.pop().wake.set()

    def _fail(self, exc: BaseException, where: str) -> None:
        """Stop the app because ``where`` cannot go on; :meth:`run` raises :class:`AppFailed`."""
        log.error("app %s: %s: %s; stopping the app", self.name, where, exc, exc_info=exc)
        if self._failure is None:
            self._failure = AppFailed(f"app {self.name}: {where}: {type(exc).__name__}: {exc}")
            self._failure.__cause__ = exc
        if self._stopper is None and not self._stopping:
            self._stopper = asyncio.get_running_loop().create_task(self.stop())
            self._stopper.add_done_callback(self._log_crash)

    def _log_crash(self, task: asyncio.Task[Any]) -> None:
        """Done callback of tasks nobody awaits: their errors are logged, never lost."""
        if not task.cancelled() and task.exception() is not None:
            log.error("app %s: task %s failed", self.name, task.get_name(),
                      exc_info=task.exception())

    async def wait_stopped(self) -> None:
        """Return once the app has stopped (asked to, or on its own after a failure)."""
        if self._stopped is None:
            raise ConfigurationError(f"app {self.name!r} was not started")
        await self._stopped.wait()

    @property
    def failure(self) -> BaseException | None:
        """Why the app stopped on its own, or None."""
        return self._failure

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the app runs and every pump and worker task is alive."""
        pumps = {r.name: r.pump is not None and not r.pump.done() for r in self._routes}
        workers = sum(1 for w in self._workers if w.task is not None and not w.task.done())
        ok = (self._started and not self._stopping and self._failure is None
              and all(pumps.values()) and workers == len(self._workers))
        detail: dict[str, Any] = {
            "app": self.name, "pumps": pumps, "workers": workers,
            "failure": None if self._failure is None else str(self._failure),
            "last_errors": {r.name: r.last_error for r in self._routes if r.last_error},
        }
        return ok, detail

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: alive, and every consumer is connected and subscribed."""
        alive, detail = self.health()
        consumers = {
            r.name: r.consumer is not None and r.consumer.connected for r in self._routes
        }
        detail["connected"] = consumers
        return alive and all(consumers.values()), detail

    async def _work(self, w: _Worker) -> None:
        """Run handlers: this worker's keyed messages first, then any keyless one."""
        assert self._sem is not None
        queue, shared, idle = w.queue, self._shared, self._idle
        while True:
            if queue:
                route, msg, d = queue.popleft()
            elif shared:
                route, msg, d = shared.popleft()
            else:
                w.wake.clear()
                idle.append(w)
                await w.wake.wait()
                if w in idle:  # woken for a keyed message, not popped by the pump
                    idle.remove(w)
                continue
            w.busy = True
            try:
                await self._handle(route, msg, d)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("app %s: handling %s failed", self.name, d.where())
            finally:
                w.busy = False
                self._sem.release()

    async def _handle(self, route: _Route, msg: Any, d: Delivery) -> None:
        consumer = route.consumer
        assert consumer is not None
        m = self.metrics
        started = time.perf_counter() if m is not None else 0.0
        attempt = 0
        confirmation: tuple[Producer[Any], int, int] | asyncio.Future[Any] | None = None
        while True:
            attempt += 1
            try:
                if m is None:
                    result = await self._call(route, msg)
                else:
                    t0 = time.perf_counter()
                    result = await self._call(route, msg)
                    m.timed("component", time.perf_counter() - t0)
                outputs = self._check_outputs(route, result)
                confirmation = await self._publish(route, outputs, d.key)
            except Ack:
                pass
            except Retry as exc:
                if attempt > route.retries:
                    await self._dead_letter(route, d, exc, attempt, "retries_exhausted")
                    break
                await self._retry(route, attempt, exc.delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if getattr(exc, "retriable", True) is False:
                    await self._dead_letter(route, d, exc, attempt, _reason(exc))
                    break
                if attempt > route.retries:
                    await self._dead_letter(route, d, exc, attempt, "retries_exhausted")
                    break
                log.info("handler %s failed on %s (attempt %d): %r; retrying", route.name,
                         d.where(), attempt, exc)
                await self._retry(route, attempt, None)
                continue
            if confirmation is not None:
                # The outputs are queued; the input is acknowledged once the broker
                # confirmed them, without holding a worker meanwhile.
                assert self._unconfirmed is not None
                await self._unconfirmed.acquire()
                if isinstance(confirmation, tuple):
                    producer, first, last = confirmation
                    self._awaiting[producer].append((last, first, route, d, started))
                else:
                    confirmation.add_done_callback(
                        functools.partial(self._on_confirmed, route, d, started)
                    )
                return
            if m is not None:
                m.consumed_ok(route.input)
            break
        await consumer.ack(d)
        if m is not None:
            m.timed("cycle", time.perf_counter() - started)

    def _settled(self, producer: Producer[Any], settled: int) -> None:
        """A producer confirmed (or refused) records up to ``settled``."""
        pending = self._awaiting[producer]
        m = self.metrics
        assert self._unconfirmed is not None
        while pending and pending[0][0] <= settled:
            last, first, route, d, started = pending.popleft()
            self._unconfirmed.release()
            consumer = route.consumer
            assert consumer is not None
            exc = producer.refused(first, last)
            if exc is not None:
                self._spawn_finish(route, d, started, exc)
                continue
            consumer.ack_nowait(d)
            if m is not None:
                m.consumed_ok(route.input)
                m.timed("cycle", time.perf_counter() - started)

    def _on_confirmed(self, route: _Route, d: Delivery, started: float,
                      fut: asyncio.Future[Any]) -> None:
        assert self._unconfirmed is not None
        self._unconfirmed.release()
        if fut.cancelled():
            return  # shutting down without confirmation: leave it for redelivery
        self._spawn_finish(route, d, started, fut.exception())

    def _spawn_finish(self, route: _Route, d: Delivery, started: float,
                      exc: BaseException | None) -> None:
        task = asyncio.get_running_loop().create_task(self._finish(route, d, started, exc))
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)
        task.add_done_callback(self._log_crash)

    async def _finish(self, route: _Route, d: Delivery, started: float,
                      exc: BaseException | None) -> None:
        """Acknowledge an input whose outputs were settled; dead-letter it if they were refused."""
        consumer = route.consumer
        assert consumer is not None
        if exc is not None:
            await self._dead_letter(route, d, exc, 1, "output_refused")
        elif self.metrics is not None:
            self.metrics.consumed_ok(route.input)
        await consumer.ack(d)
        if self.metrics is not None:
            self.metrics.timed("cycle", time.perf_counter() - started)

    async def _call(self, route: _Route, msg: Any) -> Any:
        if route.is_async:
            return await route.fn(msg)
        # Sync handlers run in a bounded thread pool so they never block the loop.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(route.fn, msg))

    async def _retry(self, route: _Route, attempt: int, delay: float | None) -> None:
        if self.metrics is not None:
            self.metrics.retried(route.input)
        if delay is None:
            cap = min(route.backoff_max, route.backoff * 2 ** (attempt - 1))
            delay = random.uniform(cap / 2, cap)  # jitter spreads retries of many workers
        await self._sleep(delay)

    def _check_outputs(self, route: _Route, result: Any) -> list[tuple[Queue, Any]]:
        if result is None:
            return []
        if not isinstance(result, list | tuple) or (
            isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str)
        ):
            raise OutputError(
                f"handler {route.name} must return a list of (queue, message) tuples or None, "
                f"got {type(result).__name__}"
            )
        out = []
        for item in result:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise OutputError(f"handler {route.name} returned {item!r}, not (queue, message)")
            qname, message = item
            if qname not in route.outputs:
                raise OutputError(
                    f"handler {route.name} published to queue {qname!r}, which is not among "
                    f"its outputs {list(route.outputs)}"
                )
            schema = self._schemas[qname]
            if not isinstance(message, schema):
                try:
                    message = msgspec.convert(message, schema, from_attributes=True)
                except msgspec.ValidationError as exc:
                    raise OutputError(
                        f"handler {route.name}: message for queue {qname!r} is not a valid "
                        f"{schema.__name__}: {exc}"
                    ) from None
            out.append((self.queues[qname], message))
        return out

    def _producer_for(self, queue: Queue) -> Producer[Any]:
        return self._queue_producer[queue.name]

    async def _publish(
        self, route: _Route, outputs: list[tuple[Queue, Any]], key: bytes | None
    ) -> tuple[Producer[Any], int, int] | asyncio.Future[Any] | None:
        """Queue the outputs; returns what to wait on for their confirmation.

        One producer (the usual case): ``(producer, first, last)`` sequence
        numbers, tracked without a future; several: a future.
        """
        if not outputs:
            return None
        firsts: dict[Producer[Any], int] = {}
        for queue, message in outputs:
            producer = self._producer_for(queue)
            if producer not in firsts:
                firsts[producer] = producer.sequence + 1
            await producer.send(message, topic=queue.topic, key=key)
        if self.metrics is not None:
            for queue, _ in outputs:
                self.metrics.produced_to(route.input, queue.name)
        if len(firsts) == 1:
            ((producer, first),) = firsts.items()
            return producer, first, producer.sequence
        return asyncio.gather(*(p.confirmed(first, p.sequence) for p, first in firsts.items()))

    async def _dead_letter(self, route: _Route, d: Delivery, exc: BaseException, attempts: int,
                           reason: str) -> None:
        queue = self.queues[route.dead_letter]
        letter, headers = make_dead_letter(d, exc, attempts=attempts, handler=route.name)
        producer = self._producer_for(queue)
        first = producer.sequence + 1
        await producer.send(letter, topic=queue.topic, key=d.key, headers=headers)
        # The input is acknowledged only once its dead letter is confirmed: wait for
        # that (not a bounded flush, which may return with the letter still queued).
        await producer.confirmed(first, producer.sequence)
        if self.metrics is not None:
            self.metrics.dead_letter(route.input, reason)
            self.metrics.consumed_fail(route.input)
        log.warning("handler %s: %s dead-lettered to %s after %d attempt(s): %s: %s",
                    route.name, d.where(), queue.topic, attempts, type(exc).__name__, exc)

    async def _watch_lag(self, default: str, every: float = 5.0) -> None:
        assert self.metrics is not None
        while True:
            for route in self._routes:
                q = self.queues[route.input]
                try:
                    async with Admin(url_of(q, default) or default) as admin:
                        lag = await admin.group_lag(self.group)
                    self.metrics.set_lag(q.name, sum(p.lag for p in lag if p.topic == q.topic))
                except BusError as exc:  # NotSupported, or the broker is away
                    log.debug("lag of %s: %s", q.name, exc)
            await asyncio.sleep(every)

    def _unfinished(self) -> int:
        return len(self._shared) + sum(len(w.queue) + w.busy for w in self._workers)

    def task(self, correlation_id: str, *, queue: str = "status", creator: str | None = None,
             stage: str | None = None, webhook: Any = None) -> Any:
        """Report a task's status on the app's ``queue`` (declared or not); app must be started."""
        from .status import task_status

        if not self._producers:
            raise ConfigurationError("start the app before reporting task status")
        q = self.queues.get(queue) or Queue(name=queue)
        producer = self._queue_producer.get(queue) or next(iter(self._producers.values()))
        return task_status(producer, correlation_id, topic=q.topic, creator=creator or self.name,
                           stage=stage, webhook=webhook)

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": self._unfinished(),
            "unconfirmed": sum(len(q) for q in self._awaiting.values()),
            "handlers": [r.name for r in self._routes],
        }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OutputError):
        return "invalid_output"
    return "rejected" if type(exc).__name__ == "Reject" else "not_retriable"


async def replay_dead_letters(
    url: str, dlq_topic: str, *, group: str = "mlops-dlq-replay", limit: int | None = None,
    timeout: float = 2.0,
) -> int:
    """Send dead letters back to their source topics, byte for byte; returns how many.

    Each is acknowledged on the dead-letter queue only after its original was
    confirmed by the broker, so a crash mid-replay replays again, never loses.
    """
    from .backends import Record, create_backend
    from .deadletter import DeadLetter

    target = create_backend(await resolve_url(url))
    await target.connect()
    done = 0
    try:
        async with Consumer(url, topic=dlq_topic, group=group, schema=DeadLetter,
                            commit="manual", auto_offset_reset="earliest") as dlq:
            while limit is None or done < limit:
                letters = await dlq.get_messages(timeout=timeout,
                                                 max_messages=None if limit is None
                                                 else limit - done)
                if not letters:
                    break
                await target.publish([Record(x.source_topic, x.original, x.key) for x in letters])
                await dlq.commit()
                done += len(letters)
    finally:
        await target.close()
    return done
