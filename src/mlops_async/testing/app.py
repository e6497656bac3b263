"""TestApp: run an App or a Pipeline against a private bus, publish to it, assert what came out.

```python
async with TestApp(app) as t:                      # a private in-memory bus
    await t.publish("raw_events", RawEvent("u1", 2.0))
    assert await t.next("features", schema=Feature) == Feature("u1", 4.0)
    await t.drain()
    assert [d.error for d in t.dead_letters("raw_events")] == [...]
```

Every queue of the app goes to one bus for the test: a fresh named memory bus
(real groups, acknowledgements and redelivery, so the test sees what a broker
would do), or the broker ``url`` names (``TestApp(app, url="redis://...")``)
with every topic suffixed by a per-test token so tests never see each other's
messages. What the app writes (its outputs and dead letters) is read by the
TestApp's own consumer group as it arrives.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec

from ..admin import Admin
from ..app import App
from ..app.ending import _drained
from ..backends.memory import MemoryBroker
from ..consumer import Consumer
from ..deadletter import DeadLetter
from ..errors import ConfigurationError
from ..pipeline import Pipeline
from ..producer import Producer
from ..queues import Queue
from .observe import SIGNALS, Call, Collector, recording, written_queues

__all__ = ["Call", "TestApp"]

log = logging.getLogger("mlops_async.testing")

T = TypeVar("T")

class TestApp:
    """Run ``target`` (an :class:`App` or a :class:`Pipeline`) for one test; see the module.

    ``url``: a real broker to run against instead of a private memory bus.
    ``timeout``: the default wait of :meth:`next`, :meth:`drain` and :meth:`finished`.
    ``keep``: how many messages per queue (and handler calls) are kept for the test.
    """

    __test__ = False  # pytest: a tool, not a test class

    def __init__(self, target: App | Pipeline, url: str | None = None, *,
                 timeout: float = 10.0, keep: int = 10_000) -> None:
        if isinstance(target, Pipeline):
            self.pipeline: Pipeline | None = target
            self.apps: list[App] = []
        elif isinstance(target, App):
            self.pipeline = None
            self.apps = [target]
        else:
            raise ConfigurationError(f"TestApp runs an App or a Pipeline, not {target!r}")
        self.token = uuid.uuid4().hex[:10]
        self.private = url is None
        self.url = url or f"memory://test-{self.token}"
        self.timeout = timeout
        self.keep = keep
        self._calls: deque[Call] = deque(maxlen=keep)
        self._collectors: dict[str, Collector] = {}
        self._consumers: list[Consumer[Any]] = []
        self._producers: dict[type[Any], Producer[Any]] = {}
        self._admins: dict[str, Admin] = {}
        self._restore: list[Callable[[], None]] = []
        self._entered = False

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> TestApp:
        if self._entered:
            raise ConfigurationError("a TestApp runs once; make a new one")
        self._entered = True
        try:
            if self.pipeline is not None:
                self.apps = self._pipeline_apps(self.pipeline)
            for app in self.apps:
                self._prepare(app)
            for name, topic, schema in written_queues(self.apps):
                await self._collect(name, topic, schema)
            for app in self.apps:
                await app.start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        await self._close()
        failure = self.failure
        if exc is None and failure is not None:
            raise failure

    def _pipeline_apps(self, pipeline: Pipeline) -> list[App]:
        run = uuid.uuid4().hex
        apps = []
        for stage in pipeline.stages.values():
            for i in range(stage.replicas):
                app = pipeline.app_for(stage.name)
                if pipeline.finite:
                    app.ending = pipeline.ending(stage.name, run, f"{stage.name}-{i}")
                apps.append(app)
        return apps

    def _prepare(self, app: App) -> None:
        """Route every queue of ``app`` to the test's bus and record its handler calls."""
        if app.url_override is not None:
            raise ConfigurationError(f"app {app.name!r} is already under test")
        app.url_override = self.url
        self._restore.append(functools.partial(setattr, app, "url_override", None))
        declared = dict(app.queues)
        inputs = {r.input for r in app.routes}
        for name, q in declared.items():
            if not self.private:
                # A real broker keeps what earlier runs left: this test's topics are its own.
                q = msgspec.structs.replace(q, value=f"{q.topic}.{self.token}")
            if name in inputs:
                # Handled inputs are acknowledged at once, so drain() sees them settled soon.
                q = msgspec.structs.replace(q, options={"commit_interval": 0.02, **q.options})
            app.queues[name] = q
        self._restore.append(functools.partial(_put_back, app.queues, declared))
        for route in app.routes:
            original = route.fn
            route.fn = recording(route.name, original, self._calls)
            self._restore.append(functools.partial(setattr, route, "fn", original))

    async def _collect(self, name: str, topic: str, schema: type[Any]) -> None:
        collector = Collector(name, topic, schema, self.keep)
        consumer: Consumer[Any] = Consumer(
            self.url, topic=topic, group=f"testapp-{self.token}", schema=schema,
            auto_offset_reset="earliest", on_invalid="raise", commit_interval=0.02)
        await consumer.start()
        collector.task = asyncio.create_task(collector.run(consumer), name=f"testapp.{name}")
        self._collectors[name] = collector
        self._consumers.append(consumer)

    async def _close(self) -> None:
        """Stop the apps (they drain), then our readers and writers; undo what _prepare did."""
        try:
            await asyncio.gather(*(app.stop() for app in self.apps), return_exceptions=True)
        finally:
            for c in self._collectors.values():
                if c.task is not None:
                    c.task.cancel()
            await asyncio.gather(*(c.task for c in self._collectors.values() if c.task),
                                 return_exceptions=True)
            for consumer in self._consumers:
                await consumer.close()
            for producer in self._producers.values():
                await producer.close()
            for admin in self._admins.values():
                await admin.close()
            for undo in reversed(self._restore):
                undo()
            self._restore.clear()
            if self.private:
                MemoryBroker.reset(self.url.split("://", 1)[1])

    # -- what a test does ------------------------------------------------------

    def topic(self, queue: str) -> str:
        """The topic ``queue`` has in this test (its declared topic, suffixed on a real broker)."""
        for app in self.apps:
            q = app.queues.get(queue)
            if q is not None:
                return q.topic
        return queue if self.private else f"{queue}.{self.token}"

    async def publish(self, queue: str, message: Any, *, key: str | bytes | None = None,
                      headers: Iterable[tuple[str, bytes]] | None = None) -> None:
        """Publish ``message`` to ``queue`` and return once the bus has it."""
        schema = type(message)
        producer = self._producers.get(schema)
        if producer is None:
            producer = self._producers[schema] = Producer(self.url, schema=schema, strict=True)
            await producer.start()
        await producer.send(message, topic=self.topic(queue), key=key,
                            headers=list(headers) if headers else None, flush=True)

    async def next(self, queue: str, *, timeout: float | None = None,
                   schema: type[T] | None = None) -> Any:
        """The next message the app wrote to ``queue`` (oldest first, each once).

        ``schema`` converts a queue without a declared schema (read as a dict) to
        that type. Raises TimeoutError naming the handlers' errors if none comes
        within ``timeout``, and the app's failure if it stopped on its own.
        """
        collector = self._collector(queue)
        if collector.failure is not None and collector.unread.empty():
            raise collector.failure  # it reads no more: waiting cannot help
        wait = self.timeout if timeout is None else timeout
        getter = asyncio.ensure_future(collector.unread.get())
        stopped = [asyncio.ensure_future(app.wait_stopped()) for app in self.apps]
        try:
            await asyncio.wait([getter, *stopped], timeout=wait,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in stopped:
                fut.cancel()
            if not getter.done():
                getter.cancel()
            await asyncio.gather(*stopped, return_exceptions=True)
        if getter.done() and not getter.cancelled():
            msg = getter.result()
            if schema is not None and not isinstance(msg, schema):
                return msgspec.convert(msg, schema)
            return msg
        self._raise_failure()
        if collector.failure is not None:
            raise collector.failure
        raise TimeoutError(f"no message on queue {queue!r} within {wait}s{self._errors_note()}")

    def messages(self, queue: str) -> list[Any]:
        """Every message the app wrote to ``queue`` so far (the last ``keep``)."""
        return list(self._collector(queue).seen)

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The dead letters of ``queue`` read so far: of the handlers that read it, or of
        the dead-letter queue of that name. Call :meth:`drain` first to have them all."""
        names = {r.dead_letter for app in self.apps for r in app.routes if r.input == queue}
        if not names and any(r.dead_letter == queue for app in self.apps for r in app.routes):
            names = {queue}
        if not names:
            raise ConfigurationError(f"no handler reads queue {queue!r}, and it is not a "
                                     f"dead-letter queue (queues: {sorted(self._collectors)})")
        return [m for n in sorted(names) for m in self._collectors[n].seen]

    def calls(self, handler: str | None = None) -> list[Call]:
        """The handler calls made so far (of one handler, by its name), oldest first."""
        return [c for c in self._calls if handler is None or c.handler == handler]

    @property
    def errors(self) -> list[BaseException]:
        """The exceptions handlers raised (retried ones too), outcome signals excepted."""
        return [c.error for c in self._calls
                if c.error is not None and not isinstance(c.error, SIGNALS)]

    @property
    def failure(self) -> BaseException | None:
        """Why an app stopped on its own (:class:`AppFailed`), or None."""
        return next((app.failure for app in self.apps if app.failure is not None), None)

    async def drain(self, timeout: float | None = None) -> None:
        """Return once nothing is in flight: every input read and settled, every source
        done, every output and dead letter read by the test. A finite pipeline drains
        at its end. Raises TimeoutError saying what is still busy."""
        wait = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        calm = 0
        while True:
            self._raise_failure()
            busy = await self._busy()
            calm = 0 if busy else calm + 1
            if calm >= 2:  # twice in a row: nothing was between two places at the check
                return
            if loop.time() > deadline:
                raise TimeoutError(f"still busy after {wait}s: {busy}{self._errors_note()}")
            await asyncio.sleep(0.02)

    async def finished(self, timeout: float | None = None) -> None:
        """Wait until every app stopped on its own (a finite pipeline's end), then drain."""
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                await asyncio.gather(*(app.wait_stopped() for app in self.apps))
        except TimeoutError:
            running = [app.name for app in self.apps if app.health()[0]]
            raise TimeoutError(f"apps still running after {wait}s: {running}"
                               f"{self._errors_note()}") from None
        self._raise_failure()
        await self.drain(wait)

    # -- helpers -----------------------------------------------------------------

    async def _busy(self) -> str:
        for app in self.apps:
            stopped = app.failure is not None or not app.health()[0]
            if not stopped and not app.idle():
                return f"app {app.name} has work in flight"
            inputs = [(self.url, app.queues[r.input].topic) for r in app.routes]
            if not stopped and inputs and not await _drained(
                    self._admins, {}, app.group, inputs):
                return f"app {app.name} has unread input"
        for c in self._collectors.values():
            if c.failure is not None:
                raise c.failure
        reads = [(self.url, c.topic) for c in self._collectors.values()]
        if reads and not await _drained(self._admins, {}, f"testapp-{self.token}", reads):
            return "the test has not yet read every output"
        return ""

    def _collector(self, queue: str) -> Collector:
        collector = self._collectors.get(queue)
        if collector is None:
            raise ConfigurationError(
                f"no handler or source writes queue {queue!r} "
                f"(written: {sorted(self._collectors)})")
        return collector

    def _raise_failure(self) -> None:
        failure = self.failure
        if failure is not None:
            raise failure

    def _errors_note(self) -> str:
        errors = [f"{c.handler}: {type(c.error).__name__}: {c.error}" for c in self._calls
                  if c.error is not None and not isinstance(c.error, SIGNALS)]
        return f"; handler errors: {errors[-5:]}" if errors else ""


def _put_back(queues: dict[str, Queue], declared: dict[str, Queue]) -> None:
    queues.clear()
    queues.update(declared)
