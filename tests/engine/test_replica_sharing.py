"""Replicas of a slow stage share its inputs: each App of one group does its share.

A pump reads only what its free workers (and their measured pace) can start
within the read window, so no replica holds inputs another could be running.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from mlops_async import App, MLOpsMessage, Producer

from ..conftest import make_msg

SLOW = 0.5


@pytest.fixture(params=["memory", "redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield f"memory://replicas-{uuid.uuid4().hex[:8]}"
    else:
        yield request.getfixturevalue(f"{request.param}_url")


def replica(url: str, topic: str, group: str, handled: list[int], concurrency: int) -> App:
    app = App(f"replica-{uuid.uuid4().hex[:6]}", url=url, group=group,
              max_concurrency=concurrency, heartbeat=None)
    app.queue("in", value=topic)

    @app.handler(input="in")
    async def slow(msg: MLOpsMessage) -> None:
        await asyncio.sleep(SLOW)
        handled.append(msg.additional_arguments["i"])

    return app


async def share(url: str, replicas: int, n: int, concurrency: int) -> list[list[int]]:
    topic, group = f"in-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    handled: list[list[int]] = [[] for _ in range(replicas)]
    apps = [replica(url, topic, group, handled[i], concurrency) for i in range(replicas)]
    for app in apps:
        await app.start()
    try:
        await asyncio.sleep(0.3)  # every replica's pump waits in its first fetch
        async with Producer(url, topic=topic) as p:
            await p.send_many([make_msg(i) for i in range(n)], flush=True)
        async with asyncio.timeout(90):
            while sum(map(len, handled)) < n:
                await asyncio.sleep(0.05)
    finally:
        for app in apps:
            await app.stop()
    assert sorted(k for h in handled for k in h) == list(range(n)), "each input handled once"
    return handled


@pytest.mark.parametrize(("replicas", "concurrency"), [(2, 1), (2, 2), (4, 1)])
async def test_replicas_of_a_slow_stage_each_do_their_share(
        url: str, replicas: int, concurrency: int) -> None:
    n = 4 * replicas * concurrency
    counts = [len(h) for h in await share(url, replicas, n, concurrency)]
    assert all(abs(c - n / replicas) <= 1 for c in counts), counts


async def test_an_app_takes_prefetch_window_as_a_consumer_option() -> None:
    app = App("windowed", url="memory://windowed", consumer_options={"prefetch_window": 0.5},
              heartbeat=None)
    app.queue("in", value="t")

    @app.handler(input="in")
    async def noop(msg: MLOpsMessage) -> None:
        return None

    async with app:
        (route,) = app._routes
        assert route.consumer is not None and route.consumer.prefetch_window == 0.5
