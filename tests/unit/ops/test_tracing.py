"""Traces across stages (mlops_async.tracing) on the in-memory bus, with the SDK's
in-memory exporter. The global TracerProvider is never set: tracing.use() scopes
the provider to these tests, so other tests in the process stay untraced."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mlops_async import App, Consumer, MLOpsMessage, Producer, tracing
from mlops_async.backends import Record, create_backend

from ...conftest import make_msg

FOREIGN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FOREIGN_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


def url() -> str:
    return f"memory://trace-{uuid.uuid4().hex[:8]}"


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def traceparent(headers: Any) -> str:
    return dict(headers or ())["traceparent"].decode()


async def wait_for(cond: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- off ------------------------------------------------------------------------------


async def test_off_without_a_configured_provider() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    u = url()
    async with Producer(u, topic="t") as p, Consumer(u, topic="t", group="g",
                                                    auto_offset_reset="earliest") as c:
        await p.send(make_msg(0), flush=True)
        assert p.send.__func__ is Producer.send  # type: ignore[attr-defined]
        async for _ in c:
            assert c.envelope is not None and c.envelope.headers is None
            assert not trace.get_current_span().get_span_context().is_valid
            break


async def test_off_by_option_or_environment(spans: InMemorySpanExporter,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracing.resolve(False) is None
    monkeypatch.setenv(tracing.ENV, "0")
    assert tracing.resolve(None) is None
    assert tracing.resolve(True) is not None  # the explicit option wins
    monkeypatch.setenv(tracing.ENV, "1")
    tracing.use(None)
    assert tracing.resolve(None) is not None  # on without a configured provider
    monkeypatch.delenv(tracing.ENV)
    assert tracing.resolve(None) is None


def test_system_names() -> None:
    assert [tracing.system_name(s) for s in ("memory", "kafka", "kafka+confluent", "redis",
                                              "rediss", "postgresql", "postgres")] == [
        "memory", "kafka", "kafka", "redis", "redis", "postgresql", "postgresql"]


# -- producer and consumer ----------------------------------------------------------------


async def test_send_injects_a_producer_span_and_replaces_old_trace_headers(
        spans: InMemorySpanExporter) -> None:
    u = url()
    old = f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01"
    async with Producer(u, topic="t") as p, Consumer(u, topic="t", group="g",
                                                    auto_offset_reset="earliest") as c:
        msg = make_msg(1)
        await p.send(msg, headers={"traceparent": old, "x-app": "1"}, flush=True)
        await p.send_many([make_msg(2), make_msg(3)], flush=True)
        ((_, d),) = await c.receive_many(1, 0)
        headers = dict(d.headers or ())
    (pub, batch) = by_name(spans)["t publish"]
    assert pub.kind == trace.SpanKind.PRODUCER and pub.parent is None
    assert headers["x-app"] == b"1"
    ctx = pub.get_span_context()
    assert headers["traceparent"].decode().split("-")[1:3] == [
        format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")]
    assert pub.attributes is not None and batch.attributes is not None
    assert pub.attributes["messaging.system"] == "memory"
    assert pub.attributes["messaging.destination.name"] == "t"
    assert pub.attributes["messaging.operation"] == "publish"
    assert pub.attributes["messaging.message.id"] == msg.id
    assert batch.attributes["messaging.batch.message_count"] == 2


async def test_async_for_span_is_current_in_the_loop_body(spans: InMemorySpanExporter) -> None:
    u = url()
    async with Producer(u, topic="in") as p:
        await p.send(make_msg(0), flush=True)
    seen: list[trace.Span] = []
    async with Consumer(u, topic="in", group="g", auto_offset_reset="earliest") as c, \
            Producer(u, topic="out") as out:
        async for msg in c:
            seen.append(trace.get_current_span())
            await out.send(msg, flush=True)
            break
    # Closed: the span ended and the context before it is back.
    assert not trace.get_current_span().get_span_context().is_valid
    names = by_name(spans)
    (first,), (process,), (second,) = names["in publish"], names["in process"], names["out publish"]
    assert seen[0].get_span_context() == process.get_span_context()
    assert process.kind == trace.SpanKind.CONSUMER
    assert process.parent is not None and first.parent is None
    assert process.parent.span_id == first.get_span_context().span_id
    assert second.parent is not None
    assert second.parent.span_id == process.get_span_context().span_id
    assert len({first.context.trace_id, process.context.trace_id,  # type: ignore[union-attr]
                second.context.trace_id}) == 1  # type: ignore[union-attr]
    assert process.attributes is not None
    assert process.attributes["messaging.operation"] == "process"
    assert process.attributes["messaging.destination.partition.id"] == "0"


async def test_a_foreign_producers_traceparent_is_honoured(spans: InMemorySpanExporter) -> None:
    u = url()
    async with Consumer(u, topic="t", group="g", auto_offset_reset="earliest") as c:
        raw = create_backend(u)
        await raw.connect()
        from mlops_async.codec import Codec

        value = Codec[MLOpsMessage]().encode(make_msg(0))
        await raw.publish([Record("t", value, None, (
            ("traceparent", f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01".encode()),))])
        await raw.close()
        async for _ in c:
            ctx = trace.get_current_span().get_span_context()
            assert format(ctx.trace_id, "032x") == FOREIGN_TRACE
            break
    (process,) = by_name(spans)["t process"]
    assert process.parent is not None and process.parent.is_remote
    assert format(process.parent.span_id, "016x") == FOREIGN_SPAN


async def test_consumer_trace_for_receive(spans: InMemorySpanExporter) -> None:
    u = url()
    async with Producer(u, topic="t") as p, Consumer(u, topic="t", group="g",
                                                    auto_offset_reset="earliest") as c:
        await p.send(make_msg(0), flush=True)
        msg, d = await c.receive()
        with c.trace(d, msg):
            assert trace.get_current_span().is_recording()
        await c.ack(d)
    (pub,), (process,) = by_name(spans)["t publish"], by_name(spans)["t process"]
    assert process.context is not None and pub.context is not None
    assert process.context.trace_id == pub.context.trace_id


# -- the engine ---------------------------------------------------------------------------


async def test_one_record_is_one_trace_through_etl_train_evaluate(
        spans: InMemorySpanExporter) -> None:
    u = url()
    app = App("trace-pipeline", url=u)
    for q in ("features", "models", "scores"):
        app.queue(q)

    @app.handler(input="features", outputs=["models"])
    async def train(m: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        assert trace.get_current_span().is_recording()
        return [("models", m)]

    @app.handler(input="models", outputs=["scores"])
    async def evaluate(m: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("scores", m)]

    async with app:
        async with Producer(u, topic="features") as etl:
            await etl.send(make_msg(0), flush=True)
        async with Consumer(u, topic="scores", group="report",
                            auto_offset_reset="earliest") as report:
            async for _ in report:
                break
    names = by_name(spans)
    chain = [names["features publish"], names["features process"], names["models publish"],
             names["models process"], names["scores publish"], names["scores process"]]
    assert [len(s) for s in chain] == [1] * 6
    flat = [s[0] for s in chain]
    assert len({s.context.trace_id for s in flat if s.context}) == 1
    for parent, child in itertools.pairwise(flat):
        assert child.parent is not None and parent.context is not None
        assert child.parent.span_id == parent.context.span_id, child.name


async def test_a_batch_handler_span_links_every_input(spans: InMemorySpanExporter) -> None:
    u = url()
    app = App("trace-batch", url=u)
    app.queue("in")
    app.queue("out")
    done: list[int] = []

    @app.handler(input="in", outputs=["out"], batch_size=10, batch_wait=0.2)
    async def many(ms: list[MLOpsMessage]) -> list[tuple[str, MLOpsMessage]]:
        done.append(len(ms))
        return [("out", ms[0])]

    async with Producer(u, topic="in") as p:
        await p.send(make_msg(0))
        await p.send(make_msg(1), flush=True)
    async with app:
        await wait_for(lambda: sum(done) == 2)
    names = by_name(spans)
    (batch,) = names["in process"]
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 2
    sent = {s.context.trace_id for s in names["in publish"] if s.context}
    assert {link.context.trace_id for link in batch.links} == sent
    (out,) = names["out publish"]
    assert out.parent is not None and batch.context is not None
    assert out.parent.span_id == batch.context.span_id
