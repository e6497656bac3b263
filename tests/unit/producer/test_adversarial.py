"""The producer's parts together under stress: strict-mode outages with sends waiting,
close during waits, the order of settlements and room, cancellation, tracing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_async import BusClosed, BusUnavailable, Consumer, Producer, SendTimeout, tracing

from ...conftest import make_msg
from ..faults import FaultyBackend


@pytest.fixture
def name() -> str:
    return f"review-{uuid.uuid4().hex[:8]}"


def queued(p: Producer) -> int:
    return p.ledger.queued


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- strict mode --------------------------------------------------------------------


async def test_strict_outage_wakes_a_send_blocked_on_a_full_buffer(name: str) -> None:
    """In strict mode an outage wakes a send waiting for buffer room: it raises BusUnavailable."""
    be = FaultyBackend(name)
    async with Producer(backend=be, topic="t", strict=True, buffer_size=2, batch_size=1,
                        flush_timeout=0.2, close_timeout=0.2) as p:
        be.gate.clear()  # the first batch's publish waits here
        await p.send(make_msg(0))
        await asyncio.sleep(0.05)
        await p.send(make_msg(1))  # buffer full now (2 unsettled)
        blocked = asyncio.create_task(p.send(make_msg(2)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        be.down = True
        be.gate.set()  # the publish fails: outage, strict
        done, _ = await asyncio.wait({blocked}, timeout=2.0)
        if not done:
            blocked.cancel()
        assert done, "strict send blocked on a full buffer not woken by the outage"
        with pytest.raises(BusUnavailable):
            blocked.result()


async def test_strict_close_during_an_outage_does_not_wait(name: str) -> None:
    """In strict mode close() during an outage gives up at once, not after flush_timeout."""
    be = FaultyBackend(name)
    p: Producer = Producer(backend=be, topic="t", strict=True, flush_timeout=30)
    await p.start()
    be.down = True
    await p.send(make_msg(0))
    await wait_until(lambda: p.stats()["outage"])
    be.gate.clear()  # the next retry hangs: no fail_waiters will come from the sender
    await asyncio.sleep(0.3)  # let the retry start
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await p.close()
    assert loop.time() - t0 < 10  # not flush_timeout


# -- settle / wake order --------------------------------------------------------------


async def test_a_flush_returns_before_a_send_waiting_for_room_refills_the_buffer(
        name: str) -> None:
    """A settlement resolves flush waiters before it wakes sends waiting for room."""
    be = FaultyBackend(name)
    async with Producer(backend=be, topic="t", buffer_size=1, batch_size=1) as p:
        be.gate.clear()
        await p.send(make_msg(0))
        seen: list[int] = []

        async def flusher() -> None:
            await p.flush(timeout=5)
            seen.append(p.stats()["buffered"])

        f = asyncio.create_task(flusher())
        b = asyncio.create_task(p.send(make_msg(1)))
        await asyncio.sleep(0.05)
        assert not f.done() and not b.done()
        be.gate.set()
        await asyncio.wait_for(asyncio.gather(f, b), 5)
        assert seen == [0], "the blocked send ran before the flush waiter"


# -- close during waits -----------------------------------------------------------------


async def test_close_wakes_a_send_waiting_for_spool_room(tmp_path: Path, name: str) -> None:
    """close() wakes a send waiting for spool room (send_timeout None): it raises."""
    be = FaultyBackend(name)
    p: Producer = Producer(backend=be, topic="t", spool=tmp_path, spool_max_bytes=1500,
                           flush_timeout=0.1)
    await p.start()
    be.down = True
    for i in range(3):  # the sender spills on the first failure; later sends go to disk
        await p.send(make_msg(i))
    await wait_until(lambda: p.stats()["outage"])
    blocked = None
    for i in range(3, 100):
        t = asyncio.create_task(p.send(make_msg(i)))
        await asyncio.sleep(0.05)
        if not t.done():
            blocked = t
            break
        t.result()
    assert blocked is not None, "spool never full"
    await p.close()
    done, _ = await asyncio.wait({blocked}, timeout=1.0)
    if not done:
        blocked.cancel()
    assert done, "send waiting for spool room still waits after close()"
    with pytest.raises((BusClosed, SendTimeout)):
        blocked.result()


# -- cancellation ---------------------------------------------------------------------


@pytest.mark.parametrize("traced", [False, True])
async def test_a_send_cancelled_at_its_yield_queued_nothing(name: str, traced: bool) -> None:
    be = FaultyBackend(name)
    async with Producer(backend=be, topic="t", batch_size=2, buffer_size=10,
                        tracing=traced) as p:
        await asyncio.sleep(0.05)  # the sender parks, waiting for work
        be.gate.clear()
        await p.send(make_msg(0))  # wakes the sender (woken, not run yet)
        await p.send(make_msg(1))  # a full batch waits
        before = queued(p)
        coro = p.send(make_msg(2), headers={"x": "1"} if traced else None)
        try:
            coro.send(None)  # runs to the yield that lets the sender cut the batch
        except StopIteration:
            pytest.fail("send did not yield")
        with pytest.raises(asyncio.CancelledError):
            coro.throw(asyncio.CancelledError())
        be.gate.set()
        assert queued(p) == before


# -- tracing -----------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[Any]:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


async def received(url: str, topic: str, n: int) -> list[dict[str, bytes]]:
    async with Consumer(url, topic=topic, group="g", auto_offset_reset="earliest") as c:
        got = await c.receive_many(n, 2)
        return [dict(d.headers or ()) for _, d in got]


@pytest.mark.parametrize("first", ["send", "send_many"])
async def test_a_producer_started_by_its_first_send_is_traced(spans: Any, first: str) -> None:
    url = f"memory://review-{uuid.uuid4().hex[:8]}"
    p: Producer = Producer(url, topic="t")
    if first == "send":
        await p.send(make_msg(0), headers={"x-app": "1"})
    else:
        await p.send_many([make_msg(0)], headers={"x-app": "1"})
    await p.send(make_msg(1), key="k", headers=[("x-app", b"2")], flush=True)
    await p.send_many([make_msg(2), make_msg(3)], topic=["t"], flush=True)
    await p.close()
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["t publish"] * 3  # one span per call, none doubled
    hs = await received(url, "t", 4)
    assert [h.get("x-app") for h in hs] == [b"1", b"2", None, None]
    assert all("traceparent" in h for h in hs)
    ids = {s.get_span_context().span_id for s in spans.get_finished_spans()}
    assert {int(h["traceparent"].decode().split("-")[2], 16) for h in hs} == ids


async def test_traced_sends_during_an_outage_reach_the_spool_with_their_span(
        spans: Any, tmp_path: Path, name: str) -> None:
    be = FaultyBackend(name)
    be.down = True
    p: Producer = Producer(backend=be, topic="t", spool=tmp_path, flush_timeout=0.1,
                           tracing=True)
    await p.start()
    await p.send(make_msg(0), headers={"x-app": "1"})
    await p.send_many([make_msg(1), make_msg(2)])
    be.down = False
    await p.flush(timeout=10)
    await p.close()
    hs = await received(f"memory://{name}", "t", 3)
    assert [h.get("x-app") for h in hs] == [b"1", None, None]
    assert all("traceparent" in h for h in hs)
    assert len(spans.get_finished_spans()) == 2


async def test_a_subclass_send_override_runs_once_per_traced_send(spans: Any) -> None:
    """A traced send runs a subclass's send override once (the span's pass bypasses it)."""
    calls: list[int] = []

    class Counting(Producer):
        async def send(self, msg: Any, **kw: Any) -> None:  # type: ignore[override]
            calls.append(1)
            await super().send(msg, **kw)

    url = f"memory://review-{uuid.uuid4().hex[:8]}"
    async with Counting(url, topic="t") as p:
        await p.send(make_msg(0))
        await p.send(make_msg(1))
    assert len(calls) == 2
