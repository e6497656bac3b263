"""The stream engine on the in-memory bus (and across brokers where named)."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_async import (
    Ack,
    App,
    ConfigurationError,
    Consumer,
    DeadLetter,
    MLOpsMessage,
    Producer,
    Queue,
    Reject,
    Retry,
    load_config,
    replay_dead_letters,
)
from mlops_async.backends import Record
from mlops_async.testing import TestApp

from .models import Alert, Feature, RawEvent


def bus() -> str:
    return f"memory://engine-{uuid.uuid4().hex[:8]}"


def typed_app(url: str, **kw: Any) -> App:
    app = App("features", url=url, **kw)
    app.queue("raw", schema="tests.engine.models:RawEvent")
    app.queue("features", schema="tests.engine.models:Feature")
    app.queue("alerts", schema="tests.engine.models:Alert")
    return app


async def read(url: str, topic: str, schema: Any, n: int, timeout: float = 10) -> list[Any]:
    out: list[Any] = []
    async with Consumer(url, topic=topic, group=f"r-{uuid.uuid4().hex[:6]}", schema=schema,
                        auto_offset_reset="earliest") as c:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n and loop.time() < deadline:
            out += await c.get_messages(timeout=0.2)
    return out


async def send(url: str, topic: str, msgs: list[Any], key: Any = None) -> None:
    async with Producer(url, topic=topic, schema=type(msgs[0])) as p:
        for m in msgs:
            await p.send(m, key=key(m) if callable(key) else key)
        await p.flush()


class FakeClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


async def wait_for(cond: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_routes_to_many_outputs_and_filters() -> None:
    url = bus()
    app = typed_app(url)

    @app.handler(input="raw", outputs=["features", "alerts"])
    async def featurize(e: RawEvent) -> list[tuple[str, Any]] | None:
        if e.value < 0:
            return None  # filtered out: nothing published, input acknowledged
        out: list[tuple[str, Any]] = [("features", Feature(e.user, e.value * 2, e.seq))]
        if e.value > 100:
            out.append(("alerts", Alert(e.user, "too big")))
        return out

    async with TestApp(app) as t:
        for event in (RawEvent("a", 1, 0), RawEvent("b", -5, 1), RawEvent("c", 500, 2)):
            await t.publish("raw", event)
        await t.drain()
        assert [f.seq for f in t.messages("features")] == [0, 2]
        assert t.messages("alerts") == [Alert("c", "too big")]
        assert [c.result for c in t.calls("featurize")][1] is None, "filtered"


async def test_invalid_input_goes_to_dead_letters_with_every_header() -> None:
    url = bus()
    app = typed_app(url)
    seen: list[RawEvent] = []

    @app.handler(input="raw", outputs=["features"], dead_letter="raw.bad")
    async def featurize(e: RawEvent) -> None:
        seen.append(e)

    async with app, Producer(url, topic="raw") as p:
        assert p.backend is not None
        await p.backend.publish([Record("raw", b'{"user": 1, "value": "x"}', b"k1")])
        await send(url, "raw", [RawEvent("ok", 1.0)])
        await wait_for(lambda: len(seen) == 1)
        sub = await p.backend.subscribe(["raw.bad"], group=None, auto_offset_reset="earliest")
        (d,) = await sub.fetch(10, 2.0)
        await sub.close()
    headers = dict(d.headers or ())
    assert headers["x-error-type"] == b"DecodeError"
    assert b"RawEvent" in headers["x-error"]
    assert headers["x-source-topic"] == b"raw"
    assert headers["x-source-position"] == b"raw[0]@0"
    assert headers["x-attempts"] == b"1" and headers["x-handler"] == b"featurize"
    assert float(headers["x-failed-at"]) > 0
    (letter,) = await read(url, "raw.bad", DeadLetter, 1)
    assert letter.original == b'{"user": 1, "value": "x"}' and letter.key == b"k1"
    assert letter.handler == "featurize" and letter.source_topic == "raw"


async def test_retries_with_exponential_backoff_then_dead_letter() -> None:
    url, clock = bus(), FakeClock()
    app = typed_app(url, sleep=clock.sleep)
    calls = 0

    @app.handler(input="raw", outputs=["features"], retries=3, backoff=1.0, backoff_max=3.0)
    async def flaky(e: RawEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("model server down")

    async with TestApp(app) as t:
        await t.publish("raw", RawEvent("a", 1))
        await t.drain()
        (letter,) = t.dead_letters("raw")
        assert [repr(e) for e in t.errors] == [repr(RuntimeError("model server down"))] * 4
    assert calls == 4 and letter.attempts == 4
    assert letter.error_type == "RuntimeError" and "model server down" in letter.error
    # exponential with jitter in [cap/2, cap], capped at backoff_max
    caps = [1.0, 2.0, 3.0]
    assert len(clock.sleeps) == 3
    assert all(c / 2 <= s <= c for s, c in zip(clock.sleeps, caps, strict=True))


async def test_recovers_after_a_retry() -> None:
    url, clock = bus(), FakeClock()
    app = typed_app(url, sleep=clock.sleep)
    calls = 0

    @app.handler(input="raw", outputs=["features"])
    async def flaky(e: RawEvent) -> list[tuple[str, Feature]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("blip")
        return [("features", Feature(e.user, 2, e.seq))]

    async with TestApp(app) as t:
        await t.publish("raw", RawEvent("a", 1))
        assert await t.next("features") == Feature("a", 2, 0)
        assert [type(c.error) for c in t.calls("flaky")] == [ConnectionError, type(None)]
    assert calls == 2 and len(clock.sleeps) == 1


class NotRetriable(Exception):
    retriable = False


@pytest.mark.parametrize(("exc", "calls_expected", "error_type"), [
    (Reject("bad label"), 1, "Reject"),
    (NotRetriable("schema drift"), 1, "NotRetriable"),
    (Retry("later", delay=0.5), 3, "Retry"),
])
async def test_outcome_signals(exc: Exception, calls_expected: int, error_type: str) -> None:
    url, clock = bus(), FakeClock()
    app = typed_app(url, sleep=clock.sleep)
    calls = 0

    @app.handler(input="raw", outputs=["features"], retries=2)
    async def handler(e: RawEvent) -> None:
        nonlocal calls
        calls += 1
        raise exc

    async with app:
        await send(url, "raw", [RawEvent("a", 1)])
        (letter,) = await read(url, "raw.dlq", DeadLetter, 1)
    assert calls == calls_expected and letter.error_type == error_type
    if isinstance(exc, Retry):
        assert clock.sleeps == [0.5, 0.5]


async def test_ack_signal_publishes_nothing_and_acknowledges() -> None:
    url = bus()
    app = typed_app(url)
    done = asyncio.Event()

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> None:
        done.set()
        raise Ack()

    async with app:
        await send(url, "raw", [RawEvent("a", 1)])
        await asyncio.wait_for(done.wait(), 5)
    assert await read(url, "raw.dlq", DeadLetter, 1, timeout=0.3) == []


async def test_undeclared_output_and_wrong_schema_are_dead_lettered_with_names() -> None:
    url = bus()
    app = typed_app(url)

    @app.handler(input="raw", outputs=["features"])
    async def bad(e: RawEvent) -> list[tuple[str, Any]]:
        if e.seq == 0:
            return [("alerts", Alert(e.user, "x"))]
        return [("features", Alert(e.user, "wrong type"))]

    async with app:
        await send(url, "raw", [RawEvent("a", 1, 0), RawEvent("b", 1, 1)])
        letters = sorted(await read(url, "raw.dlq", DeadLetter, 2), key=lambda x: x.offset or "")
    assert "queue 'alerts', which is not among its outputs ['features']" in letters[0].error
    assert "not a valid Feature" in letters[1].error
    assert all(x.error_type == "OutputError" and x.attempts == 1 for x in letters)


async def test_dicts_are_validated_into_the_output_schema() -> None:
    url = bus()
    app = typed_app(url)

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> list[tuple[str, Any]]:
        return [("features", {"user": e.user, "doubled": 2.0, "seq": e.seq})]

    async with app:
        await send(url, "raw", [RawEvent("a", 1, 9)])
        assert await read(url, "features", Feature, 1) == [Feature("a", 2.0, 9)]


async def test_per_key_order_is_kept_under_concurrency() -> None:
    url = bus()
    app = typed_app(url, max_concurrency=8)
    order: dict[str, list[int]] = {}
    in_flight = peak = 0

    @app.handler(input="raw", outputs=[])
    async def handler(e: RawEvent) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(random.uniform(0, 0.005))
        order.setdefault(e.user, []).append(e.seq)
        in_flight -= 1

    events = [RawEvent(f"user{i % 5}", 1.0, i) for i in range(200)]
    async with app:
        await send(url, "raw", events, key=lambda e: e.user)
        await wait_for(lambda: sum(map(len, order.values())) == 200)
    for user, seqs in order.items():
        assert seqs == sorted(seqs), f"order broken for {user}"
    assert peak > 1, "different keys ran concurrently"
    assert peak <= 8


async def test_sync_handlers_run_off_the_loop() -> None:
    import threading

    url = bus()
    app = typed_app(url)
    threads: set[str] = set()

    @app.handler(input="raw", outputs=["features"])
    def blocking(e: RawEvent) -> list[tuple[str, Feature]]:
        threads.add(threading.current_thread().name)
        return [("features", Feature(e.user, e.value, e.seq))]

    async with app:
        await send(url, "raw", [RawEvent("a", 1, i) for i in range(5)])
        assert len(await read(url, "features", Feature, 5)) == 5
    assert threading.main_thread().name not in threads


async def test_input_is_acknowledged_only_after_outputs_are_confirmed() -> None:
    url = bus()
    app = typed_app(url, drain_timeout=0.2)
    gate = asyncio.Event()

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> list[tuple[str, Feature]]:
        await gate.wait()  # outputs never get published before stop
        return [("features", Feature(e.user, 1, e.seq))]

    await app.start()
    await send(url, "raw", [RawEvent("a", 1, 0)])
    await asyncio.sleep(0.1)
    await app.stop()  # drain times out: the input must stay unacknowledged
    app2 = typed_app(url)

    @app2.handler(input="raw", outputs=["features"])
    async def again(e: RawEvent) -> list[tuple[str, Feature]]:
        return [("features", Feature(e.user, 1, e.seq))]

    async with app2:
        assert len(await read(url, "features", Feature, 1)) == 1


async def test_replay_sends_dead_letters_back_verbatim() -> None:
    url = bus()
    app = typed_app(url)
    broken = True
    handled: list[int] = []

    @app.handler(input="raw", outputs=[])
    async def handler(e: RawEvent) -> None:
        if broken:
            raise Reject("bug in handler")
        handled.append(e.seq)

    async with app:
        await send(url, "raw", [RawEvent("a", 1, i) for i in range(3)])
        await read(url, "raw.dlq", DeadLetter, 3)
        broken = False  # "after a fix"
        assert await replay_dead_letters(url, "raw.dlq") == 3
        await wait_for(lambda: len(handled) == 3)
        assert await replay_dead_letters(url, "raw.dlq") == 0  # acknowledged: not replayed twice
    assert sorted(handled) == [0, 1, 2]


def test_config_files_yaml_and_toml(tmp_path: Path) -> None:
    y = tmp_path / "queues.yml"
    y.write_text("url: memory://cfg\nqueues:\n  - name: raw\n    value: events.raw\n"
                 "    schema: tests.engine.models:RawEvent\n  - name: alerts\n    type: redis\n"
                 "    url: redis://localhost:6379/0\n")
    cfg = load_config(y)
    assert cfg.url == "memory://cfg" and cfg.queues[0].topic == "events.raw"
    t = tmp_path / "queues.toml"
    t.write_text('url = "memory://cfg"\n[[queues]]\nname = "raw"\nvalue = "events.raw"\n')
    assert load_config(t).queues[0].topic == "events.raw"
    bad = tmp_path / "bad.yml"
    bad.write_text("queues:\n  - name: raw\n    shema: typo\n")
    with pytest.raises(ConfigurationError, match=r"shema.*\$\.queues\[0\]|\$\.queues\[0\].*shema"):
        load_config(bad)
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("queues:\n  - name: raw\n    options: [1]\n")
    with pytest.raises(ConfigurationError, match=r"\$\.queues\[0\]\.options"):
        load_config(wrong)


def test_env_overrides_queue_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_async.queues import url_of

    q = Queue(name="alerts", type="redis", url="redis://file:6379/0")
    assert url_of(q, None) == "redis://file:6379/0"
    monkeypatch.setenv("MLOPS_REDIS_URL", "redis://bytype:6379/0")
    assert url_of(q, None) == "redis://bytype:6379/0"
    monkeypatch.setenv("MLOPS_QUEUE_ALERTS_URL", "redis://byname:6379/0")
    assert url_of(q, None) == "redis://byname:6379/0"


async def test_bad_schema_path_is_a_clear_error() -> None:
    app = App("x", url=bus())
    app.queue("raw", schema="tests.engine.models:Nope")

    @app.handler(input="raw")
    async def h(m: MLOpsMessage) -> None: ...

    with pytest.raises(ConfigurationError, match="Nope"):
        await app.start()
    await app.stop()


def test_cli_dlq_replay(capsys: pytest.CaptureFixture[str]) -> None:
    from mlops_async.cli import main

    url = bus()

    async def setup() -> None:
        async with Producer(url, topic="raw") as p:
            assert p.backend is not None
            await p.backend.publish([Record("raw", b"junk")])
        async with Consumer(url, topic="raw", group="g", auto_offset_reset="earliest") as c:
            assert await c.get_messages(timeout=0.2) == []  # dead-lettered to raw.dlq

    asyncio.run(setup())
    assert main(["dlq", "replay", "--queue", "raw.dlq", "--url", url]) == 0
    assert "replayed 1 dead letter(s)" in capsys.readouterr().out
