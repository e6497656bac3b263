"""Cancelling any call at any point leaves no task behind and loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mlops_async import Consumer, Producer

from ...conftest import make_msg
from ..faults import FaultyBackend


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.fixture
def name() -> str:
    return f"cancel-{uuid.uuid4().hex[:8]}"


async def received(url: str, topic: str) -> list[int]:
    async with Consumer(url, topic=topic, group="check", auto_offset_reset="earliest") as c:
        out: list[int] = []
        while got := await c.get_messages(timeout=0.05):
            out += [m.additional_arguments["i"] for m in got]
        return out


@pytest.mark.parametrize("delay", [0, 0.001, 0.01, 0.05])
async def test_cancel_send_waiting_for_room(name: str, delay: float) -> None:
    be = FaultyBackend(name)
    be.gate.clear()
    p = Producer(backend=be, topic="t", buffer_size=1, batch_size=1)
    await p.send(make_msg(0))
    task = asyncio.create_task(p.send(make_msg(1)))
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    be.gate.set()
    await p.close()
    assert await received(f"memory://{name}", "t") == [0]  # the cancelled send queued nothing
    assert not other_tasks()


async def test_a_send_cancelled_while_it_yields_to_the_sender_queued_nothing(name: str) -> None:
    url = f"memory://{name}"
    async with Producer(url, topic="t", batch_size=1) as p:
        async def two() -> None:
            await p.send(make_msg(1))  # wakes the sender, which has not run yet...
            await p.send(make_msg(2))  # ...so this one yields to it first

        task = asyncio.create_task(two())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # CancelledError from send() means not queued: a caller may send it again.
        assert p.ledger.queued == 1
    assert await received(url, "t") == [1]


@pytest.mark.parametrize("delay", [0, 0.001, 0.01])
async def test_cancel_flush_still_delivers(name: str, delay: float) -> None:
    be = FaultyBackend(name)
    be.gate.clear()
    p = Producer(backend=be, topic="t")
    await p.send(make_msg(0))
    task = asyncio.create_task(p.flush())
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    be.gate.set()
    await p.close()
    assert await received(f"memory://{name}", "t") == [0]
    assert not other_tasks()


@pytest.mark.parametrize("delay", [0, 0.001, 0.01, 0.05])
async def test_cancel_iteration_loses_nothing(name: str, delay: float) -> None:
    url = f"memory://{name}"
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c:
        task = asyncio.create_task(c.__anext__())
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with Producer(url, topic="t") as p:
            await p.send_many([make_msg(i) for i in range(5)], flush=True)
        got = [(await c.__anext__()).additional_arguments["i"] for _ in range(5)]
    assert got == list(range(5))
    assert not other_tasks()


@pytest.mark.parametrize("delay", [0, 0.001, 0.01])
async def test_cancel_close_leaves_no_task(name: str, delay: float) -> None:
    be = FaultyBackend(name)
    be.gate.clear()
    p = Producer(backend=be, topic="t")
    await p.send(make_msg(0))
    task = asyncio.create_task(p.close())
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await p.close()  # a second close after a cancelled one is fine
    assert not other_tasks()
