"""Tracing never does nothing without a word.

A TracerProvider configured after a producer or consumer started used to give no
spans and no warning; ``MLOPS_ASYNC_TRACING=1`` with no provider did nothing,
silently. Now a provider that appears later is picked up (from the next batch
on, said once in the log), and tracing asked for without a provider is logged
once with what to do.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mlops_async import Consumer, Producer, tracing

from ...conftest import make_msg


async def test_a_provider_configured_after_start_is_picked_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlops_async")
    url = f"memory://late-{uuid.uuid4().hex[:8]}"
    tracing.use(None)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        async with Producer(url, topic="t") as p, Consumer(url, topic="t", group="g") as c:
            await p.send(make_msg(0), flush=True)
            assert (await c.get_messages(timeout=1))[0].additional_arguments["i"] == 0
            tracing.use(provider)  # configured now, after both started
            for i in range(1, 4):
                await p.send(make_msg(i), flush=True)
            got = []
            async with asyncio.timeout(5):
                async for msg in c:
                    got.append(msg.additional_arguments["i"])
                    if got[-1] == 3:
                        break
        kinds = [s.kind for s in exporter.get_finished_spans()]
        assert SpanKind.PRODUCER in kinds and SpanKind.CONSUMER in kinds
        said = [r.message for r in caplog.records if "TracerProvider" in r.message]
        assert len(said) == 2  # once for the producer, once for the consumer
    finally:
        tracing.use(None)


async def test_tracing_asked_for_without_a_provider_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tracing, "_said", set())
    monkeypatch.setenv("MLOPS_ASYNC_TRACING", "1")
    tracing.use(None)
    url = f"memory://nop-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        async with Producer(url, topic="t") as p:
            await p.send(make_msg(0), flush=True)
    said = [r for r in caplog.records if "no TracerProvider" in r.message]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "MLOPS_ASYNC_TRACING" in said[0].message
