"""TestApp: an app or a pipeline under test on a private bus, or on a real broker by URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from mlops_async import App, AppFailed, ConfigurationError, Pipeline, Reject
from mlops_async.backends.memory import MemoryBroker
from mlops_async.testing import TestApp


class Event(msgspec.Struct, frozen=True):
    n: int


class Doubled(msgspec.Struct, frozen=True):
    n: int
    doubled: int


async def no_wait(_: float) -> None:
    return None


def doubler(**handler: Any) -> App:
    app = App("doubler", url="kafka://nowhere:9092", sleep=no_wait)

    @app.handler(input="events", outputs=["doubled"], retries=2, **handler)
    async def double(e: Event) -> list[tuple[str, Doubled]] | None:
        if e.n < 0:
            raise Reject("negative")
        if e.n == 13:
            raise ValueError("unlucky")
        return [("doubled", Doubled(e.n, 2 * e.n))]

    return app


async def test_outputs_dead_letters_and_calls_of_an_app_on_its_private_bus() -> None:
    app = doubler()
    async with TestApp(app) as t:
        assert t.url.startswith("memory://test-")
        for n in (1, -1, 13, 2):
            await t.publish("events", Event(n))
        assert await t.next("doubled", schema=Doubled) == Doubled(1, 2)
        assert await t.next("doubled", schema=Doubled) == Doubled(2, 4)
        await t.drain()
        letters = t.dead_letters("events")
        assert sorted(d.error for d in letters) == ["negative", "unlucky"]
        assert {d.attempts for d in letters if d.error == "unlucky"} == {3}
        # A handler's exception is visible: every attempt is a call, each error listed.
        assert [repr(e) for e in t.errors] == [repr(ValueError("unlucky"))] * 3
        assert [c.input for c in t.calls("double") if c.error is None] == [Event(1), Event(2)]
        with pytest.raises(TimeoutError, match="unlucky"):
            await t.next("doubled", timeout=0.1)
    assert t.url.split("://")[1] not in MemoryBroker._buses, "the private bus is forgotten"
    assert app.url_override is None and app.routes[0].fn.__name__ == "double"


async def test_the_same_app_runs_under_two_tests_one_after_the_other() -> None:
    app = doubler()
    for n in (5, 6):
        async with TestApp(app) as t:
            await t.publish("events", Event(n))
            assert await t.next("doubled", schema=Doubled) == Doubled(n, 2 * n)
            assert len(t.calls()) == 1, "each test sees only its own bus and calls"


async def test_batch_handler_under_test() -> None:
    app = App("batched", sleep=no_wait)
    app.queue("features", schema="tests.testing.test_testapp:Doubled")
    sizes: list[int] = []

    @app.handler(input="events", outputs=["features"], batch_size=16, batch_wait=0.05)
    def infer(events: list[Event]) -> list[tuple[str, Doubled]]:  # a sync batch handler
        sizes.append(len(events))
        return [("features", Doubled(e.n, 2 * e.n)) for e in events]

    async with TestApp(app) as t:
        for n in range(40):
            await t.publish("events", Event(n))
        await t.drain()
        assert t.messages("features") == [Doubled(n, 2 * n) for n in range(40)]
        assert sum(sizes) == 40 and [len(c.input) for c in t.calls("infer")] == sizes


async def test_source_and_handler_drain_to_the_end_of_the_source() -> None:
    app = App("counted", sleep=no_wait)

    @app.source(outputs=["events"])
    async def count() -> AsyncIterator[tuple[str, Event]]:
        for n in range(25):
            yield "events", Event(n)

    @app.handler(input="events", outputs=["doubled"])
    async def double(e: Event) -> list[tuple[str, Doubled]]:
        return [("doubled", Doubled(e.n, 2 * e.n))]

    async with TestApp(app) as t:
        await t.drain()
        assert [d["doubled"] for d in t.messages("doubled")] == [2 * n for n in range(25)]
        assert len(t.messages("events")) == 25


async def test_a_finite_pipeline_with_replicas_runs_to_its_end() -> None:
    pipeline = Pipeline("tiny")

    @pipeline.stage(outputs=["numbers"])
    async def numbers() -> AsyncIterator[tuple[str, Event]]:
        for n in range(30):
            yield "numbers", Event(n)

    @pipeline.stage(input="numbers", outputs=["doubled"], replicas=2)
    async def double(e: Event) -> list[tuple[str, Doubled]]:
        return [("doubled", Doubled(e.n, 2 * e.n))]

    async with TestApp(pipeline) as t:
        assert len(t.apps) == 3
        await t.finished()
        got = sorted(msgspec.convert(d, Doubled).n for d in t.messages("doubled"))
        assert got == list(range(30))
        assert {a.name for a in t.apps} == {"tiny.numbers", "tiny.double"}


async def test_an_app_that_stops_on_its_own_fails_the_test() -> None:
    app = App("broken", sleep=no_wait)

    @app.on_startup
    def nothing() -> None:
        return None

    @app.source(outputs=["events"])
    async def explode() -> AsyncIterator[tuple[str, Event]]:
        yield "events", Event(1)
        raise RuntimeError("source broke")

    with pytest.raises(AppFailed, match="source broke"):
        async with TestApp(app) as t:
            await t.drain()


async def test_asking_for_a_queue_nobody_writes_names_the_ones_written() -> None:
    async with TestApp(doubler()) as t:
        with pytest.raises(ConfigurationError, match=r"doubled"):
            await t.next("nowhere")
        with pytest.raises(ConfigurationError, match="no handler reads"):
            t.dead_letters("doubled")


@pytest.mark.redis
async def test_the_same_test_against_redis(redis_url: str) -> None:
    app = doubler()
    for _ in range(2):  # a second run sees nothing the first one left
        async with TestApp(app, url=redis_url) as t:
            assert t.topic("events").startswith("events.")
            await t.publish("events", Event(-1))
            await t.publish("events", Event(3))
            assert await t.next("doubled", schema=Doubled) == Doubled(3, 6)
            await t.drain()
            assert [d.error for d in t.dead_letters("events")] == ["negative"]
            assert len(t.messages("doubled")) == 1


@pytest.mark.kafka
async def test_the_same_test_against_kafka(kafka_bootstrap: str) -> None:
    app = doubler()
    async with TestApp(app, url=f"kafka://{kafka_bootstrap}", timeout=60) as t:
        await t.publish("events", Event(-1))
        await t.publish("events", Event(4))
        assert await t.next("doubled", schema=Doubled) == Doubled(4, 8)
        await t.drain()
        assert [d.error for d in t.dead_letters("events")] == ["negative"]


async def test_what_the_test_keeps_is_bounded_and_overflow_is_loud() -> None:
    async with TestApp(doubler(), keep=5) as t:
        for n in range(8):
            await t.publish("events", Event(n))
        with pytest.raises(OverflowError, match=r"more than 5 messages on queue 'doubled'"):
            await t.drain()
        assert len(t.messages("doubled")) == 5
