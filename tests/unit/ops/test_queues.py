"""Queue declarations: where a typed queue lives, schema-less queues, handler annotations."""

from __future__ import annotations

import asyncio
import functools
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlops_async import App, ConfigurationError, Consumer, MLOpsMessage, Producer, Queue
from mlops_async.queues import handler_schema, load_config, schema_of, url_of


class Reading(msgspec.Struct, frozen=True):
    sensor: str
    value: float


class Scaled(msgspec.Struct, frozen=True):
    sensor: str
    scaled: float


def bus() -> str:
    return f"memory://queues-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _no_type_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("KAFKA", "REDIS", "RSMQ", "MEMORY", "POSTGRESQL"):
        monkeypatch.delenv(f"MLOPS_{kind}_URL", raising=False)


# -- where a queue lives ---------------------------------------------------------


def test_a_type_without_url_takes_the_type_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    q = Queue(name="alerts", type="kafka")
    monkeypatch.setenv("MLOPS_KAFKA_URL", "kafka://bytype:9092")
    assert url_of(q, "memory://app") == "kafka://bytype:9092"


def test_a_type_without_any_url_is_an_error_naming_the_queue() -> None:
    q = Queue(name="alerts", type="kafka")
    with pytest.raises(ConfigurationError, match=r"'alerts'.*'kafka'.*MLOPS_KAFKA_URL"):
        url_of(q, "memory://app")  # never the in-memory bus in its place
    with pytest.raises(ConfigurationError, match="MLOPS_KAFKA_URL"):
        url_of(q, None)


def test_a_type_without_url_takes_the_apps_url_of_that_type() -> None:
    assert url_of(Queue(name="a", type="kafka"), "kafka://app:9092") == "kafka://app:9092"
    assert url_of(Queue(name="a", type="redis"), "rediss://app:6380/0") == "rediss://app:6380/0"
    assert url_of(Queue(name="a", type="memory"), "kafka://app:9092") == "memory://default"


def test_an_unknown_type_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"queue 'raw'.*unknown type 'kafak'"):
        url_of(Queue(name="raw", type="kafak", url="kafak://h:1"), None)
    with pytest.raises(ConfigurationError, match="unknown type"):
        url_of(Queue(name="raw", type="sqs"), "memory://x")


def test_a_url_of_another_type_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'raw'.*type 'kafka' but url redis://"):
        url_of(Queue(name="raw", type="kafka", url="redis://h:6379/0"), None)
    # Schemes of one family are fine.
    q = Queue(name="raw", type="kafka", url="kafka+confluent://h:9092")
    assert url_of(q, None) == "kafka+confluent://h:9092"


def test_volleys_rsmq_type_is_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    q = Queue(name="jobs", type="rsmq", url="redis://h:6379/0")
    assert url_of(q, None) == "redis://h:6379/0"
    monkeypatch.setenv("MLOPS_RSMQ_URL", "redis://env:6379/1")
    assert url_of(Queue(name="jobs", type="rsmq"), None) == "redis://env:6379/1"


def test_the_queue_variable_beats_the_type_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_KAFKA_URL", "kafka://bytype:9092")
    monkeypatch.setenv("MLOPS_QUEUE_RAW_EVENTS_URL", "kafka://byname:9092")
    assert url_of(Queue(name="raw-events", type="kafka"), None) == "kafka://byname:9092"


def test_untyped_queues_take_their_url_or_the_apps() -> None:
    assert url_of(Queue(name="a"), "memory://app") == "memory://app"
    assert url_of(Queue(name="a", url="redis://h:6379/0"), "memory://app") == "redis://h:6379/0"


async def test_an_app_with_a_typed_queue_and_no_url_does_not_start() -> None:
    app = App("typed", url=bus(), heartbeat=None)
    app.queue("raw", type="kafka")

    @app.handler(input="raw")
    async def h(m: MLOpsMessage) -> None: ...

    with pytest.raises(ConfigurationError, match=r"'raw'.*MLOPS_KAFKA_URL"):
        await app.start()


# -- schemas ---------------------------------------------------------------------


def test_schema_dict_and_structs(tmp_path: Path) -> None:
    f = tmp_path / "queues.yml"
    f.write_text("queues:\n  - name: raw\n    schema: dict\n"
                 "  - name: typed\n    schema: tests.unit.ops.test_queues:Reading\n"
                 "  - name: plain\n")
    raw, typed, plain = load_config(f).queues
    assert schema_of(raw) is dict and schema_of(raw, Reading) is dict  # declared wins
    assert schema_of(typed) is Reading
    assert schema_of(plain) is MLOpsMessage and schema_of(plain, Reading) is Reading
    with pytest.raises(ConfigurationError, match=r"not a msgspec\.Struct type"):
        schema_of(Queue(name="x", schema="builtins:list"))


def _struct(r: Reading) -> None: ...
def _dict(r: dict) -> None: ...  # type: ignore[type-arg]
def _dict_typed(r: dict[str, Any]) -> None: ...
def _batch(rs: list[Reading]) -> None: ...
def _any(r: Any) -> None: ...
def _bare(r): ...  # type: ignore[no-untyped-def]
def _none() -> None: ...
def _unresolvable(r: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821


def test_handler_schema_reads_the_first_parameters_annotation() -> None:
    assert handler_schema(_struct) is Reading
    assert handler_schema(_dict) is dict and handler_schema(_dict_typed) is dict
    assert handler_schema(_batch, batch=True) is Reading
    assert handler_schema(_batch) is None and handler_schema(_struct, batch=True) is None
    for fn in (_any, _bare, _none, _unresolvable, print):
        assert handler_schema(fn) is None

    @functools.wraps(_struct)
    def wrapper(msg: Any) -> None: ...

    assert handler_schema(wrapper) is Reading


async def _collect(url: str, topic: str, schema: Any, n: int) -> list[Any]:
    out: list[Any] = []
    async with Consumer(url, topic=topic, group=f"r-{uuid.uuid4().hex[:6]}", schema=schema,
                        auto_offset_reset="earliest") as c:
        async with asyncio.timeout(10):
            while len(out) < n:
                out += await c.get_messages(timeout=0.2)
    return out


async def test_the_handlers_annotation_is_the_input_schema() -> None:
    # The README's example: no schema declared for the input, the handler says RawEvent.
    url = bus()
    app = App("annotated", url=url, heartbeat=None)
    app.queue("scaled", schema="tests.unit.ops.test_queues:Scaled")
    seen: list[Reading] = []

    @app.handler(input="readings", outputs=["scaled"])
    async def scale(r: Reading) -> list[tuple[str, Any]]:
        seen.append(r)
        return [("scaled", Scaled(r.sensor, r.value * 10))]

    async with app, Producer(url, topic="readings", schema=Reading) as p:
        for i in range(3):
            await p.send(Reading(f"s{i}", i))
        await p.flush()
        out = await _collect(url, "scaled", Scaled, 3)
    assert sorted(s.scaled for s in out) == [0, 10, 20]
    assert all(type(r) is Reading for r in seen)


async def test_a_batch_handlers_annotation_gives_the_element_schema() -> None:
    url = bus()
    app = App("batched", url=url, heartbeat=None)
    seen: list[Reading] = []

    @app.handler(input="readings", batch_size=8, batch_wait=0.01)
    async def score(rows: list[Reading]) -> None:
        seen.extend(rows)

    async with app, Producer(url, topic="readings", schema=Reading) as p:
        await p.send_many([Reading("a", 1), Reading("b", 2)])
        await p.flush()
        async with asyncio.timeout(10):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
    assert {r.sensor for r in seen} == {"a", "b"}


async def test_schema_less_queues_pass_plain_objects_through() -> None:
    url = bus()
    app = App("plain", url=url, heartbeat=None)
    app.queue("events", schema="dict")
    app.queue("enriched", schema="dict")

    @app.handler(input="events", outputs=["enriched"])
    async def enrich(event: Any) -> list[tuple[str, Any]]:
        assert type(event) is dict
        return [("enriched", {**event, "seen": True})]

    async with app, Producer(url, topic="events", schema=dict) as p:
        await p.send({"user": "a", "tags": ["x", "y"], "nested": {"n": 1}})
        await p.send({"anything": None})
        await p.flush()
        out = await _collect(url, "enriched", dict, 2)
    assert {"user": "a", "tags": ["x", "y"], "nested": {"n": 1}, "seen": True} in out
    assert {"anything": None, "seen": True} in out


async def test_a_dict_annotation_makes_an_undeclared_queue_schema_less() -> None:
    url = bus()
    app = App("plain2", url=url, heartbeat=None)
    seen: list[Any] = []

    @app.handler(input="events")
    def record(event: dict[str, Any]) -> None:
        seen.append(event)

    async with app, Producer(url, topic="events", schema=dict) as p:
        await p.send({"free": "form", "n": 3})
        await p.flush()
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.01)
    assert seen == [{"free": "form", "n": 3}]
