"""The App: what it declares (queues, handlers) and its life cycle (start, drain, stop, signals).

The work itself is done by :mod:`.dispatch` (reading inputs, running handlers
on a worker pool, per-key order) and :mod:`.outcome` (retries, output checks,
confirmation, acknowledgement, dead letters).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from .._client import Backoff
from ..backends import check_options
from ..consumer import Consumer
from ..endpoint import resolve_url
from ..errors import BusError, ConfigurationError
from ..metrics import Metrics
from ..producer import Producer
from ..queues import (
    AppConfig,
    Queue,
    consumer_options,
    handler_schema,
    load_config,
    producer_options,
    schema_of,
    url_of,
)
from ..status import TaskStatus, Webhook, task_status
from .dispatch import Dispatcher
from .ending import Ending, announce, refuse_a_finished_run, wait_for_the_end
from .heartbeat import Heartbeat
from .lag import LagWatcher
from .outcome import Outcomes
from .route import AppFailed, Handler, Route

__all__ = ["App"]

log = logging.getLogger("mlops_async.app")

ErrorHook = Callable[[BaseException, Any], Any]

# Consumer arguments an app sets for each input: a queue's options may not override them.
_CONSUMER_ARGS = frozenset({"topic", "group", "schema", "commit", "on_invalid"})
# The Consumer's own keywords (prefetch, prefetch_window...): not broker options.
_CONSUMER_OWN = frozenset(inspect.signature(Consumer.__init__).parameters)


class App:
    """A worker made of handlers; see :mod:`mlops_async.app`.

    ``client_options`` go to every client the app opens (consumers, producers,
    the lag watcher's Admin): TLS, SASL and other broker options live there
    once. ``consumer_options`` add to them for the input consumers only.
    """

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
        client_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
        heartbeat: float | None = 5.0,
    ) -> None:
        self.name = name
        self.heartbeat = heartbeat  # seconds between stats for `top`; None: none
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
        self.client_options: dict[str, Any] = dict(client_options or {})
        if self.url is not None:  # known now: a wrong option fails here, not at start
            self.client_options = check_options(self.url, self.client_options)
            check_options(self.url, {**self.client_options, **{
                k: v for k, v in (consumer_options or {}).items() if k not in _CONSUMER_OWN}})
        self._sleep = sleep
        self._consumer_options = consumer_options or {}
        self._routes: list[Route] = []
        # By URL and the queue's producer options (a round-robin queue gets its own).
        self._producers: dict[tuple[str, tuple[tuple[str, Any], ...]], Producer[Any]] = {}
        self._queue_producer: dict[str, Producer[Any]] = {}  # by queue name
        self._schemas: dict[str, type[Any]] = {}
        self._hinted: dict[str, type[Any]] = {}  # input queue -> its handler's annotation
        self._dispatch: Dispatcher | None = None
        self._outcomes: Outcomes | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lag: LagWatcher | None = None
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._signals = 0
        self._failure: BaseException | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._on_startup: list[Callable[[], Any]] = []
        self._on_shutdown: list[Callable[[], Any]] = []
        self._on_error: list[ErrorHook] = []
        self._sources: list[Route] = []
        self._finite: asyncio.Task[None] | None = None
        self._heartbeat: Heartbeat | None = None
        self._ended = False  # its finite run is over (the last heartbeat says so)
        #: Set by a Pipeline: this app is one replica of a stage of a finite run.
        self.ending: Ending | None = None
        #: Set before start (the testing kit does): every queue lives at this URL instead.
        self.url_override: str | None = None

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
        batch_size: int | None = None,
        batch_wait: float = 0.02,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for ``input``; it may publish only to ``outputs``.

        ``dead_letter`` is a queue name or topic (default ``<input topic>.dlq``).

        With ``batch_size``, the handler is called with a list of up to that
        many inputs (what arrives within ``batch_wait`` seconds of the first)
        and returns None or one flat list of ``(queue, message)`` for the whole
        batch: the way to run batched model inference. Batches of one handler
        run one after another; every input of a batch is acknowledged once all
        the batch's outputs are confirmed. A batch whose handler keeps failing
        is split in halves, recursively, so only inputs that fail on their own
        are dead-lettered.
        """
        if self._started:
            raise ConfigurationError("handlers must be registered before the app starts")
        if batch_size is not None and batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")

        def register(fn: Handler) -> Handler:
            for q in (input, *outputs):
                self.queues.setdefault(q, Queue(name=q))
            in_topic = self.queues[input].topic
            dlq = dead_letter or f"{in_topic}.dlq"
            hinted = handler_schema(fn, batch=batch_size is not None)
            if hinted is not None:  # the input's schema if its queue declares none
                self._hinted.setdefault(input, hinted)
            self.queues.setdefault(dlq, Queue(name=dlq))
            self._routes.append(Route(
                name or fn.__name__, fn, inspect.iscoroutinefunction(fn), input, tuple(outputs),
                dlq, retries, Backoff(backoff, backoff_max), batch_size, batch_wait,
            ))
            return fn

        return register

    def on_startup(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``fn()`` (sync or async) once the app's clients are open, before the first
        message is handed to a handler; if it raises, the app does not start."""
        self._on_startup.append(fn)
        return fn

    def on_shutdown(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``fn()`` after the drain at stop (also on SIGINT/SIGTERM); errors are logged."""
        self._on_shutdown.append(fn)
        return fn

    def on_error(self, fn: ErrorHook) -> ErrorHook:
        """Call ``fn(exc, input)`` when a handler fails for good on ``input`` (it is then
        dead-lettered); for a batch handler, the one input that failed alone. Errors in
        ``fn`` are logged."""
        self._on_error.append(fn)
        return fn

    def source(self, *, outputs: Sequence[str], name: str | None = None,
               ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a source: an async generator (or coroutine, or generator) that
        yields ``(queue, message)`` tuples (a coroutine returns a list of them).

        When every source has finished and its outputs are confirmed, an app with
        no handlers stops by itself; in a Pipeline, the end of the stream then
        travels downstream (see :mod:`mlops_async.app.ending`).
        """
        if self._started:
            raise ConfigurationError("sources must be registered before the app starts")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            for q in outputs:
                self.queues.setdefault(q, Queue(name=q))
            self._sources.append(Route(name or fn.__name__, fn, True, "", tuple(outputs), "",
                                       0, Backoff()))
            return fn

        return register

    @property
    def routes(self) -> tuple[Route, ...]:
        """The registered handlers, in registration order."""
        return tuple(self._routes)

    @property
    def sources(self) -> tuple[Route, ...]:
        """The registered sources, in registration order."""
        return tuple(self._sources)

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open consumers and producers and start fetching.

        If opening anything fails, what was already opened is closed again. An
        app stopped with :meth:`stop` may be started again: it opens new clients
        and its groups resume where they acknowledged.
        """
        if self._started:
            return
        if not self._routes and not self._sources:
            raise ConfigurationError(f"app {self.name!r} has no handlers or sources")
        if self._stopped is not None:
            self._forget_run()
        self._started = True
        self._failure = None
        self._stopped = asyncio.Event()
        try:
            await self._open()
        except BaseException:
            await self._close_clients()
            self._started = False
            self._stopped.set()
            raise
        log.info("app %s started: %s", self.name, ", ".join(r.name for r in self._routes))

    async def _open_producer(self, qname: str, default: str) -> None:
        """The producer that writes queue ``qname``: one per URL and producer options."""
        q = self.queues[qname]
        url = self._url_of(q, default)
        extra = producer_options(q)
        key = (url, tuple(sorted(extra.items())))
        if key not in self._producers:
            producer: Producer[Any] = Producer(url, **{**self.client_options, **extra})
            self._producers[key] = producer
            await producer.start()
        self._queue_producer[qname] = self._producers[key]

    async def _open(self) -> None:
        self._executor = ThreadPoolExecutor(self.sync_workers, thread_name_prefix=self.name)
        default = self.url_override or await resolve_url(self.url)
        if self.ending is not None and self.ending.given_id:  # before any input is read
            await refuse_a_finished_run(self.ending, default, self.client_options)
        for name, q in self.queues.items():
            self._schemas[name] = schema_of(q, self._hinted.get(name))
        hinted = {n for n in self._hinted if self.queues.get(n) and self.queues[n].schema is None}
        inputs: list[tuple[Queue, str]] = []
        for source in self._sources:
            for qname in source.outputs:
                await self._open_producer(qname, default)
        for route in self._routes:
            for qname in (*route.outputs, route.dead_letter):
                await self._open_producer(qname, default)
            q = self.queues[route.input]
            url = self._url_of(q, default)
            inputs.append((q, url))
            taken = _CONSUMER_ARGS & set(q.options)
            if taken:
                raise ConfigurationError(
                    f"queue {q.name!r}: options {sorted(taken)} are set by the app itself"
                )
            options: dict[str, Any] = {"auto_offset_reset": "earliest", **self.client_options,
                                       **self._consumer_options, **consumer_options(q)}
            route.consumer = Consumer(
                url, topic=q.topic, group=self.group, schema=self._schemas[route.input],
                commit="manual", on_invalid="raise", **options,
            )
            await route.consumer.start()
        self._outcomes = Outcomes(
            self.name, self.queues, self._schemas, self._queue_producer, metrics=self.metrics,
            sleep=self._sleep, executor=self._executor, max_unconfirmed=self.max_unconfirmed,
            on_task_error=self._log_crash, on_error=self._failed_input,
        )
        self._outcomes.hinted = hinted
        for hook in self._on_startup:
            await _call_hook(hook)
        self._outcomes.track(self._producers.values())
        self._dispatch = Dispatcher(
            self.name, self.max_concurrency, handle=self._outcomes.handle,
            handle_batch=self._outcomes.handle_batch, invalid=self._outcomes.invalid,
            handle_run=None if self._outcomes.tracing is not None else self._outcomes.handle_run,
            dead_letter=self._outcomes.dead_letter,
            fail=self._fail, sleep=self._sleep, metrics=self.metrics,
        )
        self._dispatch.start(self._routes)
        if self.metrics is not None:
            self._lag = LagWatcher(self.group, inputs, self.metrics, self.client_options)
            self._lag.start()
        if self.heartbeat:
            # Its own small producer: a stats topic the broker refuses (no auto-create,
            # an ACL) must never hold up or fail the app's real outputs.
            stats: Producer[Any] = Producer(
                default, buffer_size=64, batch_size=16, send_timeout=0.1, flush_timeout=0.5,
                close_timeout=1.0, **self.client_options)
            await stats.start()
            self._heartbeat = Heartbeat(
                self.name, self.ending.stage if self.ending else self.name, stats,
                self.heartbeat, self._counters,
                inputs=sorted({self.queues[r.input].topic for r in self._routes}),
                outputs=sorted({self.queues[o].topic for r in (*self._sources, *self._routes)
                                for o in r.outputs}),
                run=self.ending.run if self.ending else "", group=self.group,
                draining=lambda: self._stopping)
            self._heartbeat.start()
        if self._sources or self.ending is not None:
            self._finite = asyncio.create_task(self._run_to_the_end(default, inputs),
                                               name=f"{self.name}.end")
            self._finite.add_done_callback(self._log_crash)

    def _url_of(self, queue: Queue, default: str) -> str:
        return self.url_override or url_of(queue, default) or default

    def idle(self) -> bool:
        """Nothing in flight: no source running, no input in a handler or awaiting its
        outputs' confirmation (what the testing kit's ``drain`` waits for)."""
        return self._idle() and (self._finite is None or self._finite.done())

    async def stop(self) -> None:
        """Drain and close; safe to call twice."""
        if self._stopping or not self._started:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        if self._heartbeat is not None:
            self._heartbeat.nudge()  # watchers see "draining" now, not at the next beat
        try:
            dispatch, outcomes = self._dispatch, self._outcomes
            finite = self._finite
            if finite is not None and finite is not asyncio.current_task():
                finite.cancel()
                await asyncio.gather(finite, return_exceptions=True)
            if dispatch is not None:
                await dispatch.stop_reading(self.drain_timeout)
            if self._lag is not None:
                await self._lag.close()
            if dispatch is not None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.drain_timeout
                # Polls worker state, bounded by the deadline.
                while dispatch.unfinished() and loop.time() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                left = dispatch.unfinished()
                if left:
                    log.warning("app %s: %d message(s) not finished after %.0fs; they will be "
                                "delivered again", self.name, left, self.drain_timeout)
                await dispatch.stop_workers()
            # Outputs still unconfirmed: deliver them, then acknowledge their inputs.
            for producer in self._producers.values():
                try:
                    async with asyncio.timeout(self.drain_timeout):
                        await producer.flush()
                except (TimeoutError, BusError) as exc:
                    log.warning("app %s: outputs not confirmed at stop: %r", self.name, exc)
            if outcomes is not None:
                await outcomes.settle_pending(self.drain_timeout)
            if self._heartbeat is not None:
                await self._heartbeat.close("ended" if self._ended else "stopped")
            for hook in self._on_shutdown:
                try:
                    await _call_hook(hook)
                except Exception:
                    log.exception("app %s: shutdown hook %s failed", self.name,
                                  getattr(hook, "__name__", hook))
            await self._close_clients()
            if outcomes is not None:
                outcomes.cancel()
        finally:
            assert self._stopped is not None
            self._started = self._stopping = False  # a later start() runs it again
            self._stopped.set()
            log.info("app %s stopped", self.name)

    def _forget_run(self) -> None:
        """At a start after a stop: forget what the last run opened (and closed).

        Kept until then, so what a stopped app did can still be looked at.
        """
        self._producers, self._queue_producer, self._schemas = {}, {}, {}
        self._dispatch = self._outcomes = self._executor = self._lag = None
        self._finite = self._heartbeat = self._stopper = None
        self._signals, self._ended = 0, False
        for route in self._routes:
            route.consumer = route.pump = route.last_error = None

    async def _close_clients(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.close()
        for route in self._routes:
            if route.consumer is not None:
                await route.consumer.close()
        for producer in self._producers.values():
            await producer.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, *, install_signals: bool = True) -> None:
        """Start, then run until :meth:`stop` or SIGINT/SIGTERM (a second one exits at once).

        Raises :class:`AppFailed` if the app stopped on its own because a part
        of it could not go on.
        """
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
            task = asyncio.get_running_loop().create_task(self.stop())
            task.add_done_callback(self._log_crash)
        else:
            log.error("app %s: second %s, exiting now", self.name, sig.name)
            os._exit(128 + int(sig))

    async def _run_to_the_end(self, default: str, inputs: list[tuple[Queue, str]]) -> None:
        """Run the sources; in a finite run, wait for the end of the input, announce ours."""
        try:
            if self._sources:
                await asyncio.gather(*(self._run_source(s) for s in self._sources))
            if self.ending is not None and self._routes:
                await wait_for_the_end(
                    self.ending, default, self.client_options, group=self.group,
                    inputs=[(url, q.topic) for q, url in inputs], idle=self._idle,
                )
            if self.ending is None and self._routes:
                return  # handlers keep running until stopped
            for producer in self._producers.values():
                await producer.flush(timeout=3600)  # every output confirmed before the end
            if self.ending is not None:
                await announce(self.ending, default, self.client_options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc, "running to the end")
            return
        log.info("app %s: finished", self.name)
        self._ended = True
        if self._stopper is None and not self._stopping:
            self._stopper = asyncio.get_running_loop().create_task(self.stop())
            self._stopper.add_done_callback(self._log_crash)

    async def _run_source(self, source: Route) -> None:
        outcomes = self._outcomes
        assert outcomes is not None
        produced = cast(Callable[[], Any], source.fn)()
        if inspect.isasyncgen(produced):
            async for item in produced:
                await outcomes.emit(source, [item])
        elif inspect.isawaitable(produced):
            items = await produced
            if items:
                await outcomes.emit(source, list(items))
        elif produced is not None:
            for item in produced:
                await outcomes.emit(source, [item])

    def _counters(self) -> tuple[int, int, int, str]:
        o = self._outcomes
        if o is None:
            return 0, 0, 0, ""
        last = o.last_error or next((r.last_error for r in self._routes if r.last_error), "")
        return o.processed, o.failed, o.published, last

    def _idle(self) -> bool:
        return (self._dispatch is not None and self._dispatch.unfinished() == 0
                and self._dispatch.idle() and self._outcomes is not None
                and self._outcomes.unconfirmed == 0)

    def _fail(self, exc: BaseException, where: str) -> None:
        """Stop the app because ``where`` cannot go on; :meth:`run` raises :class:`AppFailed`."""
        log.error("app %s: %s: %s; stopping the app", self.name, where, exc, exc_info=exc)
        if self._failure is None:
            self._failure = AppFailed(f"app {self.name}: {where}: {type(exc).__name__}: {exc}")
            self._failure.__cause__ = exc
        if self._stopper is None and not self._stopping:
            self._stopper = asyncio.get_running_loop().create_task(self.stop())
            self._stopper.add_done_callback(self._log_crash)

    async def _failed_input(self, exc: BaseException, msg: Any) -> None:
        for hook in self._on_error:
            try:
                await _call_hook(hook, exc, msg)
            except Exception:
                log.exception("app %s: error hook %s failed", self.name,
                              getattr(hook, "__name__", hook))

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

    # -- state ------------------------------------------------------------------

    @property
    def failure(self) -> BaseException | None:
        """Why the app stopped on its own, or None."""
        return self._failure

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the app runs and every pump and worker task is alive."""
        pumps, live, total = (
            self._dispatch.alive() if self._dispatch is not None else ({}, 0, 0)
        )
        ok = (self._started and not self._stopping and self._failure is None
              and all(pumps.values()) and live == total)
        detail: dict[str, Any] = {
            "app": self.name, "pumps": pumps, "workers": live,
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

    def task(self, correlation_id: str, *, queue: str = "status", creator: str | None = None,
             stage: str | None = None, webhook: Webhook | None = None) -> TaskStatus:
        """Report a task's status on the app's ``queue`` (declared or not); app must be started."""
        if not self._producers:
            raise ConfigurationError("start the app before reporting task status")
        q = self.queues.get(queue) or Queue(name=queue)
        producer = self._queue_producer.get(queue) or next(iter(self._producers.values()))
        return task_status(producer, correlation_id, topic=q.topic, creator=creator or self.name,
                           stage=stage, webhook=webhook)

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": self._dispatch.unfinished() if self._dispatch is not None else 0,
            "unconfirmed": self._outcomes.unconfirmed if self._outcomes is not None else 0,
            "handlers": [r.name for r in self._routes],
        }


async def _call_hook(fn: Callable[..., Any], *args: Any) -> None:
    result = fn(*args)
    if inspect.isawaitable(result):
        await result
