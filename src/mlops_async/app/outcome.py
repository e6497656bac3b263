"""The outcome of one input: call the handler, retry, check and publish its outputs,
acknowledge the input once they are confirmed, or dead-letter it.

Confirmation is tracked by producer sequence numbers (one listener per
producer, no task or future per message): an input whose outputs all went
through one producer is acknowledged when that producer settles their last
sequence number.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from ..backends import Delivery
from ..deadletter import make_dead_letter
from ..errors import DecodeError, MessageTooLarge
from ..metrics import Metrics
from ..producer import Producer
from ..queues import Queue
from ..signals import Ack, Reject, Retry
from ..tracing import resolve, system_name
from .dispatch import Slots
from .route import OutputError, Route

__all__ = ["RUN_SETTLE", "Outcomes"]

#: Seconds after which a run's finished inputs are settled even if the run goes on.
RUN_SETTLE = 0.01

log = logging.getLogger("mlops_async.app")

Confirmation = tuple[Producer[Any], int, int] | asyncio.Future[Any]


class Outcomes:
    """Settles inputs for one app (see the module docstring)."""

    def __init__(
        self,
        app: str,
        queues: dict[str, Queue],
        schemas: dict[str, type[Any]],
        producers: dict[str, Producer[Any]],
        *,
        metrics: Metrics | None,
        sleep: Callable[[float], Awaitable[Any]],
        executor: ThreadPoolExecutor,
        max_unconfirmed: int,
        on_task_error: Callable[[asyncio.Task[Any]], None],
        on_error: Callable[[BaseException, Any], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.queues = queues
        self.schemas = schemas
        self.producers = producers  # by queue name
        self.hinted: set[str] = set()  # queues whose schema comes from a handler annotation
        # handler -> queue -> (queue, schema, undeclared): _check_outputs' lookups, cached.
        self._targets: dict[str, dict[str, tuple[Queue, Any, bool]]] = {}
        self._fast: dict[str, dict[str, tuple[Producer[Any], str, type[Any]]]] = {}
        self.metrics = metrics
        self._sleep = sleep
        self._executor = executor
        self._unconfirmed = Slots(max_unconfirmed)
        # Per producer: (last seq, first seq, route, inputs, start time) awaiting confirmation.
        self._awaiting: dict[
            Producer[Any], deque[tuple[int, int, Route, tuple[Delivery, ...], float]]
        ] = {}
        self._finishers: set[asyncio.Task[None]] = set()
        self._on_task_error = on_task_error
        self._on_error = on_error
        # Counters for the heartbeat: inputs acknowledged, given up on, outputs published.
        self.processed = 0
        self.failed = 0
        self.published = 0
        self.last_error = ""
        # Tracing on (mlops_async.tracing): each handler runs in its input's span, so
        # its outputs continue the trace. Chosen once: untraced, handle is untouched.
        self.tracing = resolve(None)
        if self.tracing is not None:
            self.handle = self._traced_handle  # type: ignore[method-assign]
            self.handle_batch = self._traced_handle_batch  # type: ignore[method-assign]

    async def _traced_handle(self, route: Route, msg: Any, d: Delivery,
                             failed: BaseException | None = None) -> None:
        assert self.tracing is not None and route.consumer is not None
        backend = route.consumer.backend
        system = system_name(backend.scheme if backend is not None else "")
        with self.tracing.processing(d, msg, system):
            await Outcomes.handle(self, route, msg, d, failed)

    async def _traced_handle_batch(self, route: Route, msgs: list[Any],
                                   ds: list[Delivery]) -> None:
        assert self.tracing is not None and route.consumer is not None
        backend = route.consumer.backend
        system = system_name(backend.scheme if backend is not None else "")
        with self.tracing.processing_batch(ds, system):
            await Outcomes.handle_batch(self, route, msgs, ds)

    def track(self, producers: Iterable[Producer[Any]]) -> None:
        """Follow the confirmations of ``producers`` (call once, after they started)."""
        for producer in producers:
            self._awaiting[producer] = deque()
            producer.ledger.add_listener(functools.partial(self._settled, producer))

    @property
    def unconfirmed(self) -> int:
        return sum(len(q) for q in self._awaiting.values())

    async def settle_pending(self, timeout: float) -> None:
        """Let inputs whose outputs were just confirmed be acknowledged (at stop)."""
        await asyncio.sleep(0)  # confirmation callbacks schedule their finishers
        if self._finishers:
            await asyncio.wait(set(self._finishers), timeout=timeout)

    def cancel(self) -> None:
        for t in list(self._finishers):
            t.cancel()

    # -- one input ------------------------------------------------------------

    async def handle(self, route: Route, msg: Any, d: Delivery,
                     failed: BaseException | None = None) -> None:
        """One input, start to end; ``failed``: its first attempt already raised that."""
        consumer = route.consumer
        assert consumer is not None
        m = self.metrics
        started = time.perf_counter() if m is not None else 0.0
        attempt = 0
        confirmation: Confirmation | None = None
        while True:
            attempt += 1
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
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
                    await self._give_up(route, d, exc, attempt, "retries_exhausted", started,
                                        msg)
                    return
                await self._retry(route, attempt, exc.delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if getattr(exc, "retriable", True) is False or attempt > route.retries:
                    reason = _reason(exc) if attempt <= route.retries else "retries_exhausted"
                    await self._give_up(route, d, exc, attempt, reason, started, msg)
                    return
                log.info("handler %s failed on %s (attempt %d): %r; retrying", route.name,
                         d.where(), attempt, exc)
                await self._retry(route, attempt, None)
                continue
            break
        await self._settle_inputs(route, (d,), confirmation, started)

    async def invalid(self, route: Route, d: Delivery, exc: DecodeError | MessageTooLarge
                      ) -> None:
        """An input that does not decode: a tombstone is skipped (the consumer counts and
        acknowledges it), anything else is dead-lettered with the reason, then acknowledged."""
        consumer = route.consumer
        assert consumer is not None
        try:
            await consumer.invalid(d, exc)  # on_invalid="raise": returns for tombstones only
        except (DecodeError, MessageTooLarge) as bad:
            await self.dead_letter(route, d, bad, 1, "invalid")
            await consumer.ack(d)

    async def handle_run(self, items: list[tuple[Route, Delivery]]) -> None:
        """Several inputs one after another, settled together: the per-message hot path.

        Each input is decoded, then its handler runs as in :meth:`handle`, in order; a single
        output goes into its producer's buffer without a coroutine
        (``Producer.send_nowait``), and the inputs whose outputs were queued are
        acknowledged together once the broker confirmed them (one confirmation
        entry for the run, not one per input; a refused output dead-letters
        the run's inputs, as it does the inputs whose outputs shared the
        refused producer batch). An input whose handler raises,
        returns several outputs or must wait takes the full path of
        :meth:`handle` on its own (retries, dead letters), its neighbours stay
        in the run. A run settles what is finished before the next handler call
        once ``RUN_SETTLE`` seconds passed since its last settle, so a finished
        input waits for at most that plus one (slow) handler call.
        """
        m = self.metrics
        clock = time.perf_counter
        route0 = items[0][0]
        assert route0.consumer is not None
        decode = route0.consumer.decode
        ds: list[Delivery] = []
        add = ds.append
        firsts: dict[Producer[Any], int] = {}
        waits: list[asyncio.Future[Any]] = []
        published = 0
        started = clock()
        fast = self._fast_targets(route0)
        for route, d in items:
            try:
                if route is not route0 or (ds and clock() - started > RUN_SETTLE):
                    # Another handler's input, or a slow run: settle what is finished
                    # first (an acknowledgement lags by RUN_SETTLE plus one call at most).
                    if ds or waits:
                        done, done_firsts, done_waits = ds, firsts, waits
                        ds, firsts, waits = [], {}, []  # swapped first: see _settle_cancelled
                        add = ds.append
                        await self._settle_run(route0, done, done_firsts, done_waits, started)
                    started = clock()
                    if route is not route0:
                        route0, fast = route, self._fast_targets(route)
                        assert route.consumer is not None
                        decode = route.consumer.decode
                try:
                    msg = decode(d)
                except (DecodeError, MessageTooLarge) as exc:
                    await self.invalid(route, d, exc)
                    continue
                try:
                    if m is None:
                        result = await (route.fn(msg) if route.is_async
                                        else self._call(route, msg))
                    else:
                        t0 = clock()
                        result = await (route.fn(msg) if route.is_async
                                        else self._call(route, msg))
                        m.timed("component", clock() - t0)
                    if result is None:
                        add(d)
                        continue
                    # One (queue, message) of the queue's schema, seen before: checked
                    # and queued inline. Anything else goes through _check_outputs.
                    if (result.__class__ is list and len(result) == 1
                            and (item := result[0]).__class__ is tuple and len(item) == 2
                            and (target := fast.get(item[0])) is not None
                            and item[1].__class__ is target[2]):
                        producer, topic, _ = target
                        first = 0 if producer in firsts else producer.ledger.queued + 1
                        if not producer.send_nowait(item[1], topic, d.key):
                            await producer.send(item[1], topic=topic, key=d.key)
                        if first:
                            firsts[producer] = first  # only once something is queued
                        published += 1
                        if m is not None:
                            m.produced_to(route.input, item[0], 1)
                    else:
                        confirmation = await self._publish(
                            route, self._check_outputs(route, result), d.key)
                        fast = self._fast_targets(route)
                        if isinstance(confirmation, tuple):
                            producer, first, _ = confirmation
                            firsts.setdefault(producer, first)
                        elif confirmation is not None:
                            waits.append(confirmation)
                    add(d)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Ack, Retry, a handler error, a bad output: this input alone takes
                    # the full path (retries, dead letters) and settles itself.
                    await self.handle(route, msg, d, failed=exc)
            except asyncio.CancelledError:
                self.published += published
                if ds or waits:  # shutdown: what this run finished is not redelivered
                    self._settle_cancelled(route0, ds, firsts, waits, started)
                raise
            except Exception:
                # Unexpected (a dead letter that cannot be sent...): this input stays
                # unacknowledged, delivered again; the rest of the run goes on.
                route.last_error = "handling failed; see the log"
                log.exception("app %s: handling %s failed", self.app, d.where())
        self.published += published
        if ds or waits:
            await self._settle_run(route0, ds, firsts, waits, started)

    def _fast_targets(self, route: Route) -> dict[str, tuple[Producer[Any], str, type[Any]]]:
        """queue name -> (producer, topic, schema) for the outputs of ``route`` whose
        messages of exactly that schema need no check (filled from _check_outputs')."""
        fast = self._fast.get(route.name)
        known = self._targets.get(route.name, {})
        if fast is None or len(fast) != len(known):
            fast = self._fast[route.name] = {
                qname: (self.producers[qname], queue.topic, schema)
                for qname, (queue, schema, _) in known.items()}
        return fast

    async def _settle_run(self, route: Route, ds: list[Delivery],
                          firsts: dict[Producer[Any], int], waits: list[asyncio.Future[Any]],
                          started: float) -> None:
        await self._settle_inputs(route, tuple(ds), _confirmation(firsts, waits), started)

    async def _give_up(self, route: Route, d: Delivery, exc: BaseException, attempts: int,
                       reason: str, started: float, msg: Any) -> None:
        """Dead-letter ``d``, then acknowledge it: it is done with, just not processed."""
        self.failed += 1
        self.last_error = f"{route.name}: {type(exc).__name__}: {exc}"
        if self._on_error is not None:
            await self._on_error(exc, msg)
        await self.dead_letter(route, d, exc, attempts, reason)
        consumer = route.consumer
        assert consumer is not None
        await consumer.ack(d)
        if self.metrics is not None:
            self.metrics.timed("cycle", time.perf_counter() - started)

    async def _settle_inputs(self, route: Route, ds: tuple[Delivery, ...],
                             confirmation: Confirmation | None, started: float) -> None:
        """Acknowledge ``ds`` now, or once ``confirmation`` says their outputs are on the broker."""
        if confirmation is not None:
            # The outputs are queued; the inputs are acknowledged once the broker
            # confirmed them, without holding a worker meanwhile.
            slots = self._unconfirmed
            if slots.free > 0 and not slots.waiters:
                slots.free -= 1  # Slots.acquire's fast path, without a coroutine
            else:
                await slots.acquire()
            self._await_confirmation(route, ds, confirmation, started)
            return
        consumer = route.consumer
        assert consumer is not None
        m = self.metrics
        if m is not None:
            m.consumed_ok(route.input, len(ds))
        self.processed += len(ds)
        await consumer.ack(*ds)
        if m is not None:
            m.timed("cycle", time.perf_counter() - started)

    def _await_confirmation(self, route: Route, ds: tuple[Delivery, ...],
                            confirmation: Confirmation, started: float) -> None:
        """Acknowledge ``ds`` once ``confirmation`` resolves (its unconfirmed slot is taken)."""
        if isinstance(confirmation, tuple):
            producer, first, last = confirmation
            self._awaiting[producer].append((last, first, route, ds, started))
            if producer.ledger.settled >= last:
                # Settled while we waited for a slot: no confirmation will call back.
                self._settled(producer, producer.ledger.settled)
        else:
            confirmation.add_done_callback(
                functools.partial(self._on_confirmed, route, ds, started))

    def _settle_cancelled(self, route: Route, ds: list[Delivery],
                          firsts: dict[Producer[Any], int], waits: list[asyncio.Future[Any]],
                          started: float) -> None:
        """A run cancelled part way (shutdown): settle what it finished, without waiting.

        Its unconfirmed slot is taken even if none is free: a one-off past the bound
        at shutdown, rather than redelivering inputs that were done.
        """
        confirmation = _confirmation(firsts, waits)
        if confirmation is None:
            consumer = route.consumer
            assert consumer is not None
            self.processed += len(ds)
            consumer.ack_nowait(*ds)
            return
        self._unconfirmed.free -= 1
        self._await_confirmation(route, tuple(ds), confirmation, started)

    # -- a batch ----------------------------------------------------------------

    async def handle_batch(self, route: Route, msgs: list[Any], ds: list[Delivery]) -> None:
        """Run a batch handler on ``msgs``, with retries; split the batch if it keeps failing."""
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                confirmation = await self._run_batch(route, msgs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = exc.delay if isinstance(exc, Retry) else None
                if getattr(exc, "retriable", True) is False or attempt > route.retries:
                    log.info("batch handler %s: a batch of %d failed %d time(s) (%r); "
                             "splitting it to find the inputs that fail", route.name,
                             len(msgs), attempt, exc)
                    await self._isolate(route, msgs, ds, exc, attempt, started)
                    return
                await self._retry(route, attempt, delay)
                continue
            await self._settle_inputs(route, tuple(ds), confirmation, started)
            return

    async def _run_batch(self, route: Route, msgs: list[Any]) -> Confirmation | None:
        m = self.metrics
        t0 = time.perf_counter()
        try:
            result = await self._call(route, msgs)
        except Ack:
            return None
        if m is not None:
            m.timed("component", time.perf_counter() - t0)
        # The usual return, all of it to one queue already seen, in that queue's schema:
        # checked in one pass and queued with one send_many.
        if result.__class__ is list and result and (item := result[0]).__class__ is tuple \
                and len(item) == 2 and (target := self._fast_targets(route).get(item[0])):
            qname = item[0]
            producer, topic, schema = target
            out = [x[1] for x in result if x.__class__ is tuple and len(x) == 2
                   and x[0] == qname and x[1].__class__ is schema]
            if len(out) == len(result):
                first = producer.ledger.queued + 1
                await producer.send_many(out, topic=topic)
                self.published += len(out)
                if m is not None:
                    m.produced_to(route.input, qname, len(out))
                return producer, first, producer.ledger.queued
        return await self._publish(route, self._check_outputs(route, result), None)

    async def _isolate(self, route: Route, msgs: list[Any], ds: list[Delivery],
                       exc: BaseException, attempts: int, started: float) -> None:
        """Halves, recursively: one poison input must not dead-letter its neighbours."""
        if len(msgs) == 1:
            reason = _reason(exc) if attempts <= route.retries else "retries_exhausted"
            await self._give_up(route, ds[0], exc, attempts, reason, started, msgs[0])
            return
        mid = len(msgs) // 2
        for part, part_ds in ((msgs[:mid], ds[:mid]), (msgs[mid:], ds[mid:])):
            try:
                confirmation = await self._run_batch(route, part)
            except asyncio.CancelledError:
                raise
            except Exception as part_exc:
                await self._isolate(route, part, part_ds, part_exc, attempts + 1, started)
                continue
            await self._settle_inputs(route, tuple(part_ds), confirmation, started)

    async def emit(self, source: Route, items: list[Any]) -> None:
        """Publish what a source produced, checked like a handler's outputs."""
        await self._publish(source, self._check_outputs(source, items), None)

    async def _call(self, route: Route, msg: Any) -> Any:
        if route.is_async:
            return await route.fn(msg)
        # Sync handlers run in a bounded thread pool so they never block the loop.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(route.fn, msg))

    async def _retry(self, route: Route, attempt: int, delay: float | None) -> None:
        if self.metrics is not None:
            self.metrics.retried(route.input)
        await self._sleep(route.backoff.delay_for(attempt - 1) if delay is None else delay)

    def _check_outputs(self, route: Route, result: Any) -> list[tuple[Queue, Any]]:
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
        known = self._targets.get(route.name)
        if known is None:
            known = self._targets[route.name] = {}
        for item in result:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise OutputError(f"handler {route.name} returned {item!r}, not (queue, message)")
            qname, message = item
            target = known.get(qname)
            if target is None:
                if qname not in route.outputs:
                    raise OutputError(
                        f"handler {route.name} published to queue {qname!r}, which is not "
                        f"among its outputs {list(route.outputs)}"
                    )
                # Looked up once per handler and queue (the schemas are fixed by now).
                target = known[qname] = (
                    self.queues[qname], self.schemas[qname],
                    self.queues[qname].schema is None and qname not in self.hinted)
            queue, schema, undeclared = target
            if undeclared and isinstance(message, msgspec.Struct | dict):
                pass  # no schema declared for it: a Struct or a plain object goes as it is
            elif not isinstance(message, schema):
                try:
                    message = msgspec.convert(message, schema, from_attributes=True)
                except msgspec.ValidationError as exc:
                    raise OutputError(
                        f"handler {route.name}: message for queue {qname!r} is not a valid "
                        f"{schema.__name__}: {exc}"
                    ) from None
            out.append((queue, message))
        return out

    async def _publish(
        self, route: Route, outputs: list[tuple[Queue, Any]], key: bytes | None
    ) -> Confirmation | None:
        """Queue the outputs; returns what to wait on for their confirmation.

        One producer (the usual case): ``(producer, first, last)`` sequence
        numbers, tracked without a future; several: a future.
        """
        if not outputs:
            return None
        self.published += len(outputs)
        firsts: dict[Producer[Any], int] = {}
        if len(outputs) == 1:
            queue, message = outputs[0]
            producer = self.producers[queue.name]
            firsts[producer] = producer.ledger.queued + 1
            await producer.send(message, topic=queue.topic, key=key)
        else:
            # Runs of outputs to one queue go in one send_many (a batch handler's usual
            # return): one encode pass and buffer extension, order kept.
            i, n = 0, len(outputs)
            while i < n:
                queue = outputs[i][0]
                j = i + 1
                while j < n and outputs[j][0] is queue:
                    j += 1
                producer = self.producers[queue.name]
                if producer not in firsts:
                    firsts[producer] = producer.ledger.queued + 1
                if j - i == 1:
                    await producer.send(outputs[i][1], topic=queue.topic, key=key)
                else:
                    await producer.send_many([m for _, m in outputs[i:j]], topic=queue.topic,
                                             key=key)
                i = j
        if self.metrics is not None:
            for qname, count in Counter(queue.name for queue, _ in outputs).items():
                self.metrics.produced_to(route.input, qname, count)
        return _confirmation(firsts, [])

    async def dead_letter(self, route: Route, d: Delivery, exc: BaseException, attempts: int,
                          reason: str) -> None:
        """Publish ``d`` to the route's dead-letter queue and wait until it is confirmed."""
        queue = self.queues[route.dead_letter]
        letter, headers = make_dead_letter(d, exc, attempts=attempts, handler=route.name)
        producer = self.producers[queue.name]
        first = producer.ledger.queued + 1
        await producer.send(letter, topic=queue.topic, key=d.key, headers=headers)
        # The input is acknowledged only once its dead letter is confirmed: wait for
        # that (not a bounded flush, which may return with the letter still queued).
        await producer.ledger.confirmed(first, producer.ledger.queued)
        if self.metrics is not None:
            self.metrics.dead_letter(route.input, reason)
            self.metrics.consumed_fail(route.input)
        log.warning("handler %s: %s dead-lettered to %s after %d attempt(s): %s: %s",
                    route.name, d.where(), queue.topic, attempts, type(exc).__name__, exc)

    # -- confirmation ---------------------------------------------------------

    def _settled(self, producer: Producer[Any], settled: int) -> None:
        """A producer confirmed (or refused) records up to ``settled``."""
        pending = self._awaiting[producer]
        m = self.metrics
        while pending and pending[0][0] <= settled:
            last, first, route, ds, started = pending.popleft()
            self._unconfirmed.release()
            consumer = route.consumer
            assert consumer is not None
            exc = producer.ledger.refused(first, last)
            if exc is not None:
                self._spawn_finish(route, ds, started, exc)
                continue
            self.processed += len(ds)
            consumer.ack_nowait(*ds)
            if m is not None:
                m.consumed_ok(route.input, len(ds))
                m.timed("cycle", time.perf_counter() - started)

    def _on_confirmed(self, route: Route, ds: tuple[Delivery, ...], started: float,
                      fut: asyncio.Future[Any]) -> None:
        self._unconfirmed.release()
        if fut.cancelled():
            return  # shutting down without confirmation: leave them for redelivery
        self._spawn_finish(route, ds, started, fut.exception())

    def _spawn_finish(self, route: Route, ds: tuple[Delivery, ...], started: float,
                      exc: BaseException | None) -> None:
        task = asyncio.get_running_loop().create_task(self._finish(route, ds, started, exc))
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)
        task.add_done_callback(self._on_task_error)

    async def _finish(self, route: Route, ds: tuple[Delivery, ...], started: float,
                      exc: BaseException | None) -> None:
        """Acknowledge inputs whose outputs were settled; dead-letter them if they were refused."""
        consumer = route.consumer
        assert consumer is not None
        for d in ds:
            if exc is not None:
                await self.dead_letter(route, d, exc, 1, "output_refused")
            elif self.metrics is not None:
                self.metrics.consumed_ok(route.input)
        await consumer.ack(*ds)
        if self.metrics is not None:
            self.metrics.timed("cycle", time.perf_counter() - started)


def _confirmation(firsts: dict[Producer[Any], int], waits: list[asyncio.Future[Any]]
                  ) -> Confirmation | None:
    """What inputs wait on for outputs queued from ``firsts`` (the first sequence number
    per producer) up to now, and for ``waits``: sequence numbers if one producer, else a
    future."""
    if not firsts and not waits:
        return None
    if len(firsts) == 1 and not waits:
        ((producer, first),) = firsts.items()
        return producer, first, producer.ledger.queued
    return asyncio.gather(
        *waits, *(p.ledger.confirmed(first, p.ledger.queued) for p, first in firsts.items()))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OutputError):
        return "invalid_output"
    return "rejected" if isinstance(exc, Reject) else "not_retriable"
