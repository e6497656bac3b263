from __future__ import annotations

import asyncio
import logging
import uuid

import msgspec
import pytest

from mlops_async import BusClosed, BusUnavailable, Consumer, DecodeError, Producer
from mlops_async.backends import Record

from ...conftest import make_msg
from ..faults import FaultyBackend


@pytest.fixture
def name() -> str:
    return f"unit-{uuid.uuid4().hex[:8]}"


async def publish(name: str, *payloads: bytes) -> None:
    async with Producer(f"memory://{name}", topic="t") as p:
        be = p.backend
        assert be is not None
        await be.publish([Record("t", v) for v in payloads])


async def test_on_invalid_raise_gives_decode_error_with_position_then_continues(name: str) -> None:
    good = Producer(f"memory://{name}", topic="t")._codec.encode(make_msg(1))
    await publish(name, b"\x01\xc1", good)
    async with Consumer(
        f"memory://{name}", topic="t", group="g", auto_offset_reset="earliest", on_invalid="raise"
    ) as c:
        with pytest.raises(DecodeError) as info:
            await c.__anext__()
        assert "t[0]@0" in str(info.value) and info.value.payload == b"\x01\xc1"
        msg = await c.__anext__()  # the consumer goes on with the next message
        assert msg.additional_arguments["i"] == 1


async def test_oversize_payload_is_dead_lettered_with_reason(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    big = Producer(f"memory://{name}")._codec.encode(make_msg(0, blob="x" * 3000))
    await publish(name, big)
    async with Consumer(
        f"memory://{name}",
        topic="t",
        group="g",
        auto_offset_reset="earliest",
        max_message_size=1000,
    ) as c:
        assert await c.get_messages(timeout=0.1) == []
        assert c.stats()["dead_lettered"] == 1
    assert "exceeds the limit of 1000" in caplog.text


async def test_lenient_consumer_returns_empty_during_outage_and_recovers(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mlops_async")
    be = FaultyBackend(name)
    async with Producer(f"memory://{name}", topic="t") as p:
        async with Consumer(backend=be, topic="t", group="g", auto_offset_reset="earliest") as c:
            be.down = True
            await p.send(make_msg(1), flush=True)
            assert await c.get_messages(timeout=0.05) == []
            assert await c.get_messages(timeout=0.05) == []
            be.down = False
            got = await c.get_messages(timeout=1)
    assert [m.additional_arguments["i"] for m in got] == [1]
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1


async def test_iteration_keeps_retrying_until_the_broker_is_back(name: str) -> None:
    be = FaultyBackend(name)
    be.down = True
    async with Producer(f"memory://{name}", topic="t") as p:
        await p.send(make_msg(7), flush=True)
    c = Consumer(backend=be, topic="t", group="g", auto_offset_reset="earliest")
    await c.start()  # lenient: starts despite the outage
    task = asyncio.create_task(c.__anext__())
    await asyncio.sleep(0.3)
    assert not task.done()
    be.down = False
    msg = await asyncio.wait_for(task, 10)
    assert msg.additional_arguments["i"] == 7
    await c.close()


async def test_strict_consumer_raises(name: str) -> None:
    be = FaultyBackend(name)
    async with Consumer(backend=be, topic="t", group="g", strict=True) as c:
        be.down = True
        with pytest.raises(BusUnavailable):
            await c.get_messages(timeout=0.05)


async def test_get_messages_after_close_raises(name: str) -> None:
    c = Consumer(f"memory://{name}", topic="t")
    await c.start()
    await c.close()
    with pytest.raises(BusClosed):
        await c.get_messages()


async def test_seed_spelling_and_group_id(name: str) -> None:
    c = Consumer(orchestrator="memory", orchestrator_endpoint=name, topic="t", group_id="g1")
    assert c.group == "g1"
    async with c:
        assert c.get_subscriptions() == ["t"]


class Reading(msgspec.Struct, frozen=True):
    sensor: str
    value: float


async def test_user_schema(name: str) -> None:
    url = f"memory://{name}"
    async with Consumer(url, topic="r", group="g", schema=Reading) as c:
        async with Producer(url, topic="r", schema=Reading) as p:
            await p.send(Reading("s1", 0.5), flush=True)
        assert await c.get_messages(timeout=1) == [Reading("s1", 0.5)]


async def test_prefetch_is_bounded(name: str) -> None:
    url = f"memory://{name}"
    async with Producer(url, topic="t") as p:
        await p.send_many([make_msg(i) for i in range(100)], flush=True)
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest", prefetch=10) as c:
        await c.__anext__()
        assert c.stats()["buffered"] <= 9


async def test_a_batch_given_up_on_is_not_acknowledged_unseen() -> None:
    url = f"memory://take-{uuid.uuid4().hex[:6]}"
    async with Producer(url, topic="t") as p:
        c: Consumer = Consumer(url, topic="t", group="g", auto_offset_reset="earliest",
                               poll_timeout=0.1)
        await c.start()
        await p.send(make_msg(0), flush=True)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await c.receive_many(10, 5.0)  # one message, then waiting for more
        await c.close()  # processed=True: must not ack what was never handed out
        async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as again:
            assert len(await again.get_messages(timeout=0.3)) == 1
