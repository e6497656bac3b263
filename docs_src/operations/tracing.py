"""Traces across stages with OpenTelemetry (the otel extra)."""

from __future__ import annotations

import asyncio

# --8<-- [start:tracing]
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mlops_async import Consumer, MessageBuilder, MessageType, Producer, tracing

exporter = InMemorySpanExporter()              # in production: an OTLP exporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracing.use(provider)                          # this library only; or set it globally


async def traced(url: str = "memory://traced") -> list[str]:
    async with Producer(url, topic="train") as producer:
        await producer.send(MessageBuilder().with_msg_type(MessageType.START).build())
    async with Consumer(url, topic="train", group="g", auto_offset_reset="earliest") as c:
        async for _msg in c:                   # a CONSUMER span, child of the producer's
            break
    return [span.name for span in exporter.get_finished_spans()]
# --8<-- [end:tracing]


if __name__ == "__main__":
    print(asyncio.run(traced()))
