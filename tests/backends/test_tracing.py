"""Traces across stages on every backend: one trace id from a producer through an
engine handler to a downstream consumer, and a foreign producer's traceparent."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mlops_async import App, MLOpsMessage, tracing
from mlops_async.backends import Record, create_backend
from mlops_async.codec import Codec

from ..conftest import make_msg
from .conftest import Bus
from .test_contract import consumer, producer

FOREIGN_TRACE = "0af7651916cd43dd8448eb211c80319c"
FOREIGN_SPAN = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)  # this library only: the global provider stays unset
    try:
        yield exporter
    finally:
        tracing.use(None)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_one_trace_from_producer_through_handler_to_consumer(
        bus: Bus, spans: InMemorySpanExporter) -> None:
    tag = uuid.uuid4().hex[:8]
    src, dst = f"{bus.name}-src-{tag}", f"{bus.name}-dst-{tag}"
    app = App(f"trace-{tag}", url=bus.url, consumer_options=bus.consumer_options,
              client_options=bus.producer_options or None)
    app.queue("src", value=src)
    app.queue("dst", value=dst)
    if bus.name in ("kafka", "confluent"):
        # librdkafka does not pick up a topic created after it subscribed for a while.
        await bus.create_topic(src)
        await bus.create_topic(dst)

    @app.handler(input="src", outputs=["dst"])
    async def train(m: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("dst", m)]

    async with app:
        async with producer(bus, src) as p:
            await p.send(make_msg(0), flush=True)

        async def downstream() -> str:
            async with consumer(bus, dst, bus.group()) as c:
                async for _ in c:
                    ctx = trace.get_current_span().get_span_context()
                    return format(ctx.trace_id, "032x")
            raise AssertionError("closed")

        seen = await asyncio.wait_for(downstream(), 110)  # librdkafka group joins are slow on Tansu
    chain = [named(spans, f"{src} publish"), named(spans, f"{src} process"),
             named(spans, f"{dst} publish"), named(spans, f"{dst} process")]
    assert [len(c) for c in chain] == [1, 1, 1, 1], [s.name for s in spans.get_finished_spans()]
    flat = [c[0] for c in chain]
    ids = {format(s.context.trace_id, "032x") for s in flat if s.context is not None}
    assert ids == {seen}
    for parent, child in itertools.pairwise(flat):
        assert child.parent is not None and parent.context is not None
        assert child.parent.span_id == parent.context.span_id, child.name
    system = "kafka" if bus.name == "confluent" else (
        "postgresql" if bus.name == "postgres" else bus.name)
    handled = flat[1]
    assert handled.kind == trace.SpanKind.CONSUMER and handled.attributes is not None
    assert handled.attributes["messaging.system"] == system
    assert handled.attributes["messaging.destination.name"] == src
    if system == "kafka":
        assert handled.attributes["messaging.kafka.message.offset"] == 0


async def test_a_foreign_traceparent_is_honoured(bus: Bus, spans: InMemorySpanExporter) -> None:
    topic = bus.topic()
    raw = create_backend(bus.url)
    await raw.connect()
    try:
        value = Codec[MLOpsMessage]().encode(make_msg(0))
        header = f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01".encode()
        await raw.publish([Record(topic, value, None, (("traceparent", header),))])
    finally:
        await raw.close()

    async def read() -> str:
        async with consumer(bus, topic, bus.group()) as c:
            async for _ in c:
                return format(trace.get_current_span().get_span_context().trace_id, "032x")
        raise AssertionError("closed")

    assert await asyncio.wait_for(read(), 110) == FOREIGN_TRACE
    (process,) = named(spans, f"{topic} process")
    assert process.parent is not None and process.parent.is_remote
    assert format(process.parent.span_id, "016x") == FOREIGN_SPAN
