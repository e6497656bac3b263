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
import functools
import inspect
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

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

__all__ = ["App", "OutputError"]

log = logging.getLogger("mlops_async.app")

Handler = Callable[[Any], Any]


class OutputError(BusError):
    """A handler returned something it may not publish (undeclared queue, wrong schema)."""


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._tails: dict[tuple[str, bytes], asyncio.Future[None]] = {}
        self._sem: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._signals = 0

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
        self._sem = asyncio.Semaphore(self.max_concurrency)
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
            route.consumer = Consumer(
                url_of(q, default) or default, topic=q.topic, group=self.group,
                schema=self._schemas[route.input], commit="manual", on_invalid="raise",
                auto_offset_reset="earliest", **{**self._consumer_options, **q.options},
            )
            await route.consumer.start()
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
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
                if pending:
                    log.warning("app %s: %d message(s) still in flight after %.0fs; they will "
                                "be delivered again", self.name, len(pending), self.drain_timeout)
                    for t in pending:
                        t.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
            for route in self._routes:
                if route.consumer is not None:
                    await route.consumer.close()
            for producer in self._producers.values():
                await producer.close()
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
        consumer = route.consumer
        assert consumer is not None and self._sem is not None
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
            await self._sem.acquire()
            task = asyncio.create_task(self._process(route, msg, d))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        assert self._sem is not None
        self._sem.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("app %s: message task failed", self.name, exc_info=task.exception())

    async def _process(self, route: _Route, msg: Any, d: Delivery) -> None:
        tail_key = (route.name, d.key) if d.key is not None else None
        prev = mine = None
        if tail_key is not None:  # same key: one after another, in arrival order
            prev = self._tails.get(tail_key)
            mine = asyncio.get_running_loop().create_future()
            self._tails[tail_key] = mine
        try:
            if prev is not None:
                await prev
            await self._handle(route, msg, d)
        finally:
            if mine is not None:
                mine.set_result(None)
                if self._tails.get(tail_key) is mine:  # type: ignore[arg-type]
                    del self._tails[tail_key]  # type: ignore[arg-type]

    async def _handle(self, route: _Route, msg: Any, d: Delivery) -> None:
        consumer = route.consumer
        assert consumer is not None
        m = self.metrics
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                t0 = time.perf_counter()
                result = await self._call(route, msg)
                if m is not None:
                    m.timed("component", time.perf_counter() - t0)
                outputs = self._check_outputs(route, result)
                await self._publish(route, outputs, d.key)
            except Ack:
                pass
            except Retry as exc:
                if attempt > route.retries:
                    await self._fail(route, d, exc, attempt, "retries_exhausted")
                    break
                await self._retry(route, attempt, exc.delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if getattr(exc, "retriable", True) is False:
                    await self._fail(route, d, exc, attempt, _reason(exc))
                    break
                if attempt > route.retries:
                    await self._fail(route, d, exc, attempt, "retries_exhausted")
                    break
                log.info("handler %s failed on %s (attempt %d): %r; retrying", route.name,
                         d.where(), attempt, exc)
                await self._retry(route, attempt, None)
                continue
            if m is not None:
                m.consumed_ok(route.input)
            break
        await consumer.ack(d)
        if m is not None:
            m.timed("cycle", time.perf_counter() - started)

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

    async def _publish(self, route: _Route, outputs: list[tuple[Queue, Any]],
                       key: bytes | None) -> None:
        if not outputs:
            return
        used = []
        for queue, message in outputs:
            producer = self._producer_for(queue)
            await producer.send(message, topic=queue.topic, key=key)
            if producer not in used:
                used.append(producer)
        for producer in used:  # acknowledged only once every output is confirmed
            await producer.flush()
        if self.metrics is not None:
            for queue, _ in outputs:
                self.metrics.produced_to(route.input, queue.name)

    async def _fail(self, route: _Route, d: Delivery, exc: BaseException, attempts: int,
                    reason: str) -> None:
        await self._dead_letter(route, d, exc, attempts, reason)

    async def _dead_letter(self, route: _Route, d: Delivery, exc: BaseException, attempts: int,
                           reason: str) -> None:
        queue = self.queues[route.dead_letter]
        letter, headers = make_dead_letter(d, exc, attempts=attempts, handler=route.name)
        producer = self._producer_for(queue)
        await producer.send(letter, topic=queue.topic, key=d.key, headers=headers, flush=True)
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

    def stats(self) -> dict[str, Any]:
        return {"in_flight": len(self._tasks), "handlers": [r.name for r in self._routes]}


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


def ensure_app(obj: Any) -> App:
    if not isinstance(obj, App):
        raise ConfigurationError(f"{obj!r} is not an mlops_async App")
    return obj


