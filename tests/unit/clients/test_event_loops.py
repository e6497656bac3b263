"""A client belongs to the event loop it started on: used from another, it says so.

``asyncio.run(p.start()); asyncio.run(p.send(m, flush=True))`` used to log "not
confirmed after 5.0s; they stay queued" and lose the message (its sender task died
with the first loop). Every such call now raises :class:`WrongEventLoop`.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mlops_async import Admin, BusError, Consumer, Producer, WrongEventLoop

from ...conftest import make_msg


def _url() -> str:
    return f"memory://loops-{uuid.uuid4().hex[:8]}"


def test_a_producer_used_from_a_second_loop_raises_instead_of_losing() -> None:
    p = Producer(_url(), topic="t", flush_timeout=5.0)
    asyncio.run(p.start())
    with pytest.raises(WrongEventLoop, match=r"Producer.*started on.*used from"):
        asyncio.run(asyncio.wait_for(p.send(make_msg(), flush=True), 3))


def test_a_producer_closed_from_a_second_loop_raises() -> None:
    p = Producer(_url(), topic="t")
    asyncio.run(p.start())
    with pytest.raises(WrongEventLoop):
        asyncio.run(asyncio.wait_for(p.close(), 3))


def test_a_producer_used_from_another_threads_loop_raises() -> None:
    # The first loop is still running: the sender waits for work there, and a send
    # from another thread's loop must not reach into it without a word.
    url = _url()

    async def scenario() -> None:
        p = Producer(url, topic="t")
        await p.start()
        await asyncio.sleep(0)  # the sender now waits for work on this loop
        with pytest.raises(WrongEventLoop):
            await asyncio.to_thread(asyncio.run, p.send(make_msg()))
        async with asyncio.timeout(5):  # nothing left stranded for close() to wait on
            await p.close()

    asyncio.run(scenario())


def test_a_consumer_used_from_a_second_loop_raises() -> None:
    c = Consumer(_url(), topic="t", group="g")
    asyncio.run(c.start())
    with pytest.raises(WrongEventLoop, match="Consumer"):
        asyncio.run(asyncio.wait_for(c.get_messages(timeout=0.5), 3))
    with pytest.raises(WrongEventLoop):
        asyncio.run(c.close())


def test_an_admin_used_from_a_second_loop_raises() -> None:
    a = Admin(_url())
    asyncio.run(a.start())
    with pytest.raises(WrongEventLoop, match="Admin"):
        asyncio.run(a.list_topics())


def test_wrong_event_loop_is_a_bus_error() -> None:
    assert issubclass(WrongEventLoop, BusError)
