"""Batch handlers: lists in, one flat list of outputs out, poison isolated by splitting."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from mlops_async import Admin, App, ConfigurationError, DeadLetter, Pipeline

from .models import Feature, RawEvent
from .test_app import read, send


def bus() -> str:
    return f"memory://batch-{uuid.uuid4().hex[:8]}"


async def no_wait(_: float) -> None:
    return None


def batch_app(url: str, **kw: Any) -> App:
    app = App("batched", url=url, sleep=no_wait, **kw)
    app.queue("raw", schema="tests.engine.models:RawEvent")
    app.queue("features", schema="tests.engine.models:Feature")
    return app


async def test_handler_gets_bounded_batches_and_inputs_are_acked_after_outputs() -> None:
    url = bus()
    app = batch_app(url)
    sizes: list[int] = []

    @app.handler(input="raw", outputs=["features"], batch_size=32, batch_wait=0.01)
    async def infer(events: list[RawEvent]) -> list[tuple[str, Feature]]:
        sizes.append(len(events))
        return [("features", Feature(e.user, e.value * 2, e.seq)) for e in events]

    await send(url, "raw", [RawEvent("u", float(i), i) for i in range(200)])
    async with app:
        out = await read(url, "features", Feature, 200)
        async with asyncio.timeout(10):
            while True:  # every input acknowledged once its batch's outputs were confirmed
                async with Admin(url) as admin:
                    lag = await admin.group_lag("batched")
                if sum(p.lag for p in lag) == 0:
                    break
                await asyncio.sleep(0.05)
    assert all(1 <= n <= 32 for n in sizes) and sum(sizes) == 200
    assert max(sizes) > 1, "inputs were batched"
    assert [f.seq for f in out] == list(range(200)), "batches run in order"


async def test_one_poison_input_is_dead_lettered_alone_its_neighbours_go_through() -> None:
    url = bus()
    app = batch_app(url)
    calls: list[int] = []

    @app.handler(input="raw", outputs=["features"], batch_size=64, batch_wait=0.05, retries=1)
    def infer(events: list[RawEvent]) -> list[tuple[str, Feature]]:  # sync: thread pool
        calls.append(len(events))
        if any(e.seq == 37 for e in events):
            raise ValueError("model cannot score seq 37")
        return [("features", Feature(e.user, e.value, e.seq)) for e in events]

    await send(url, "raw", [RawEvent("u", 1.0, i) for i in range(64)])
    async with app:
        out = await read(url, "features", Feature, 63)
        dead = await read(url, "raw.dlq", DeadLetter, 1)
    assert sorted(f.seq for f in out) == [i for i in range(64) if i != 37]
    assert len(dead) == 1 and "seq 37" in dead[0].error and dead[0].handler == "infer"
    # Retried whole (1 + 1 retry), then split in halves down to the one that fails alone.
    assert calls[:2] == [64, 64] and 1 in calls and len(calls) <= 2 + 2 * 6


async def test_batch_size_validation_and_pipeline_stages_take_it() -> None:
    app = batch_app(bus())
    with pytest.raises(ConfigurationError):
        app.handler(input="raw", batch_size=0)
    url = bus()
    pipeline = Pipeline("p", url=url)
    pipeline.queue("raw", schema="tests.engine.models:RawEvent")
    pipeline.queue("features", schema="tests.engine.models:Feature")
    seen: list[int] = []

    @pipeline.stage(input="raw", outputs=["features"], batch_size=10, batch_wait=0.01)
    async def featurize(events: list[RawEvent]) -> list[tuple[str, Feature]]:
        seen.append(len(events))
        return [("features", Feature(e.user, e.value, e.seq)) for e in events]

    await send(url, "raw", [RawEvent("u", 1.0, i) for i in range(25)])
    task = asyncio.ensure_future(pipeline.run(install_signals=False))
    try:
        out = await read(url, "features", Feature, 25)
    finally:
        pipeline.stop()
        await task
    assert len(out) == 25 and all(n <= 10 for n in seen)
