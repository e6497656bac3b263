"""The live `top` view, rendered to a recording console against live buses."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from rich.console import Console

from mlops_async import Consumer, Producer
from mlops_async.backends import Record
from mlops_async.top import TopView, run_top

from ...conftest import make_msg


async def fill(url: str, topic: str, group: str) -> None:
    async with Producer(url, topic=topic) as p:
        assert p.backend is not None
        await p.backend.publish([Record(topic, b"\x01junk-1"), Record(topic, b"\x01junk-2")])
        await p.send_many([make_msg(i) for i in range(50)], flush=True)
    async with Consumer(url, topic=topic, group=group, auto_offset_reset="earliest") as c:
        got = 0
        while got < 30:
            got += len(await c.get_messages(timeout=2, max_messages=30 - got))
        await c.commit()


async def test_top_shows_rates_lag_and_dead_letters_on_memory() -> None:
    url = f"memory://top-{uuid.uuid4().hex[:6]}"
    await fill(url, "orders", "billing")
    view = TopView(url)
    try:
        (row,) = [r for r in await view.snapshot() if r.topic == "orders"]
        assert (row.written, row.consumed, row.lag) == (52, 32, 20)
        assert row.groups == ["billing"] and row.dead_letters == 2
        assert row.last_error.startswith("DecodeError: cannot decode message at orders[0]@1")
        async with Producer(url, topic="orders") as p:
            await p.send_many([make_msg(i) for i in range(10)], flush=True)
        await asyncio.sleep(0.1)
        (row,) = [r for r in await view.snapshot() if r.topic == "orders"]
        assert row.in_rate is not None and row.in_rate > 0 and row.lag == 30
    finally:
        await view.close()


async def test_top_renders_in_place_on_a_terminal() -> None:
    url = f"memory://top-{uuid.uuid4().hex[:6]}"
    await fill(url, "orders", "billing")
    console = Console(record=True, width=200, force_terminal=True)
    await run_top(url, console=console, interval=0.05, iterations=3)
    text = console.export_text()
    assert "orders" in text and "billing" in text and "DecodeError" in text
    line = next(x for x in text.splitlines() if "orders" in x)
    assert " 52 " in line and " 20 " in line


@pytest.mark.redis
async def test_top_on_redis(redis_url: str) -> None:
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    await fill(redis_url, topic, "billing")
    view = TopView(redis_url, group="billing")
    try:
        (row,) = [r for r in await view.snapshot() if r.topic == topic]
    finally:
        await view.close()
    assert (row.written, row.lag, row.dead_letters) == (52, 20, 2)


@pytest.mark.kafka
async def test_top_on_kafka(kafka_bootstrap: str) -> None:
    from mlops_async import Admin

    url = f"kafka://{kafka_bootstrap}"
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    async with Admin(url) as admin:  # one partition: the junk is read first, as on the others
        await admin.create_topic(topic, partitions=1)
        await admin.create_topic(f"{topic}.dlq", partitions=1)
    await fill(url, topic, f"billing-{topic}")
    view = TopView(url, group=f"billing-{topic}")
    try:
        (row,) = [r for r in await view.snapshot() if r.topic == topic]
    finally:
        await view.close()
    assert (row.written, row.lag, row.dead_letters) == (52, 20, 2)


async def test_top_shows_one_row_per_stage_replica() -> None:
    from mlops_async import MLOpsMessage, Pipeline
    from mlops_async.top import render

    url = f"memory://replicas-{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline("rows", url=url, app_options={"heartbeat": 0.05})

    @pipeline.stage(input="in", outputs=["out"], replicas=3)
    async def work(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("out", msg)]

    task = asyncio.ensure_future(pipeline.run(install_signals=False))
    view = TopView(url)
    try:
        async with Producer(url, topic="in") as p:
            await p.send_many([make_msg(i) for i in range(30)], flush=True)
        async with asyncio.timeout(10):
            while True:
                rows = await view.replica_rows()
                if len(rows) == 3 and sum(r.processed for r in rows) == 30:
                    break
                await asyncio.sleep(0.05)
        assert {r.stage for r in rows} == {"rows.work"}
        console = Console(record=True, width=160)
        console.print(render(await view.snapshot(), url, rows))
        text = console.export_text()
        assert "stage replicas" in text and text.count("rows.work") >= 3
    finally:
        pipeline.stop()
        await task
        await view.close()
