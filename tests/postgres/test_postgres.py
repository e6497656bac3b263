"""The PostgreSQL queue plugin against a real server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from mlops_async import App, Consumer, MLOpsMessage, Producer, Queue
from mlops_async.backends import create_backend
from mlops_async.plugins.postgres import PostgresBackend

from ..conftest import make_msg


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_registered_by_entry_point_and_hides_password() -> None:
    be = create_backend("postgresql://u:s3cret@localhost:5432/db")
    assert isinstance(be, PostgresBackend)
    assert "s3cret" not in repr(be)
    assert isinstance(create_backend("postgres://u@localhost/db"), PostgresBackend)


async def test_members_share_the_work_without_duplicates(postgres_url: str) -> None:
    topic, group = name("pt"), name("g")
    n = 400
    seen: list[list[int]] = [[], [], []]
    consumers = [Consumer(postgres_url, topic=topic, group=group, prefetch=25) for _ in range(3)]
    for c in consumers:
        await c.start()
    async with Producer(postgres_url, topic=topic) as p:
        await p.send_many([make_msg(i) for i in range(n)], flush=True)

    async def run(k: int) -> None:
        while sum(map(len, seen)) < n:
            seen[k] += [m.additional_arguments["i"] for m in
                        await consumers[k].get_messages(timeout=0.2)]

    try:
        await asyncio.wait_for(asyncio.gather(*(run(k) for k in range(3))), 60)
    finally:
        for c in consumers:
            await c.close()
    together = [i for s in seen for i in s]
    assert sorted(together) == list(range(n))
    assert sum(1 for s in seen if s) >= 2


async def test_dead_members_lease_is_taken_over(postgres_url: str) -> None:
    topic, group = name("pt"), name("g")
    async with Producer(postgres_url, topic=topic) as p:
        await p.send_many([make_msg(i) for i in range(10)], flush=True)
    dead = create_backend(postgres_url, lease_seconds=1.0)
    await dead.connect()
    sub = await dead.subscribe([topic], group=group, auto_offset_reset="earliest")
    taken = await sub.fetch(4, 1.0)  # then the process "dies": no ack, no close
    assert len(taken) == 4
    assert isinstance(sub, object)
    await sub.listener.close()  # type: ignore[attr-defined]
    assert isinstance(dead, PostgresBackend) and dead.pool is not None
    await dead.pool.close()
    async with Consumer(postgres_url, topic=topic, group=group, lease_seconds=1.0) as c:
        got: list[int] = []
        deadline = time.monotonic() + 10
        while len(got) < 10 and time.monotonic() < deadline:
            got += [m.additional_arguments["i"] for m in await c.get_messages(timeout=0.5)]
    assert sorted(got) == list(range(10))


async def test_listen_notify_wakes_a_waiting_consumer(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_async.plugins import postgres

    # No safety poll within the wait: only a NOTIFY can deliver the message in time.
    monkeypatch.setattr(postgres._PgSubscription, "safety_poll", 3600.0)
    topic = name("pt")
    async with Consumer(postgres_url, topic=topic, group=name("g")) as c:
        await c.get_messages(timeout=0.1)
        waiting = asyncio.create_task(c.get_messages(timeout=30))
        await asyncio.sleep(0.2)
        async with Producer(postgres_url, topic=topic) as p:
            await p.send(make_msg(1), flush=True)
        got = await waiting
        assert [m.additional_arguments["i"] for m in got] == [1]


async def test_an_app_can_use_the_plugin_by_dotted_path(postgres_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    app = App("pg-app", url="memory://pg-app-" + tag)
    app.queues["in"] = Queue(name="in", value=f"in-{tag}", url=postgres_url,
                             type="mlops_async.plugins.postgres:PostgresBackend")
    app.queue("out", value=f"out-{tag}")

    @app.handler(input="in", outputs=["out"])
    async def copy(m: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("out", m)]

    async with app, Producer(postgres_url, topic=f"in-{tag}") as p:
        await p.send(make_msg(5), flush=True)
        async with Consumer("memory://pg-app-" + tag, topic=f"out-{tag}", group="g",
                            auto_offset_reset="earliest") as c:
            got = await c.get_messages(timeout=5)
    assert [m.additional_arguments["i"] for m in got] == [5]
