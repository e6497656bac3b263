from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from mlops_async import (
    BusClosed,
    BusUnavailable,
    Consumer,
    EncodeError,
    MessageTooLarge,
    MLOpsMessage,
    Producer,
    PublishError,
    SendTimeout,
)

from ...conftest import make_msg
from ..faults import FaultyBackend


@pytest.fixture
def name() -> str:
    return f"unit-{uuid.uuid4().hex[:8]}"


async def count_on(name: str, topic: str) -> list[int]:
    async with Consumer(
        f"memory://{name}", topic=topic, group="check", auto_offset_reset="earliest"
    ) as c:
        out: list[int] = []
        while got := await c.get_messages(timeout=0.05):
            out += [m.additional_arguments["i"] for m in got]
        return out


async def test_full_buffer_makes_send_wait_and_nothing_is_dropped(name: str) -> None:
    be = FaultyBackend(name)
    be.gate.clear()
    async with Producer(backend=be, topic="t", buffer_size=10, batch_size=5) as p:
        for i in range(10):
            await p.send(make_msg(i))
        blocked = asyncio.create_task(p.send(make_msg(10)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        assert p.stats()["buffered"] == 10
        be.gate.set()
        await asyncio.wait_for(blocked, 5)
        await p.flush()
    assert await count_on(name, "t") == list(range(11))
    assert max(be.batches) <= 5


async def test_byte_bound_also_applies(name: str) -> None:
    be = FaultyBackend(name)
    be.gate.clear()
    async with Producer(backend=be, topic="t", buffer_bytes=3000) as p:
        await p.send(make_msg(0, blob="x" * 2000))
        blocked = asyncio.create_task(p.send(make_msg(1, blob="x" * 2000)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        be.gate.set()
        await blocked


async def test_send_timeout_raises_a_clear_error(name: str) -> None:
    be = FaultyBackend(name)
    be.gate.clear()
    p = Producer(
        backend=be, topic="t", buffer_size=2, batch_size=1, send_timeout=0.05, close_timeout=0.1
    )
    await p.start()
    await p.send(make_msg(0))
    await p.send(make_msg(1))
    with pytest.raises(SendTimeout, match="buffer full"):
        await p.send(make_msg(2))
    be.gate.set()
    await p.close()


async def test_linger_and_batching_cut_by_count(name: str) -> None:
    be = FaultyBackend(name)
    async with Producer(backend=be, topic="t", batch_size=100, linger=0.01) as p:
        for i in range(250):
            await p.send(make_msg(i))
        await p.flush()
    assert sum(be.batches) == 250 and max(be.batches) <= 100
    assert len(be.batches) <= 5  # batched, not one publish per message


async def test_lenient_outage_queues_logs_once_and_delivers_later(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    be = FaultyBackend(name)
    be.down = True
    caplog.set_level(logging.WARNING, "mlops_async")
    async with Producer(backend=be, topic="t") as p:
        for i in range(20):
            await p.send(make_msg(i))  # never raises in lenient mode
        await asyncio.sleep(0.3)
        assert p.stats()["outage"] and p.stats()["buffered"] == 20
        be.down = False
        await p.flush(timeout=10)  # an explicit bound: wait for delivery, not flush_timeout
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1, "one warning per outage, not per message or retry"
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert await count_on(name, "t") == list(range(20))


async def test_strict_mode_raises_during_outage_and_keeps_what_was_queued(name: str) -> None:
    be = FaultyBackend(name)
    be.down = True
    with pytest.raises(BusUnavailable):
        await Producer(backend=be, topic="t", strict=True).start()
    be.down = False
    async with Producer(backend=be, topic="t", strict=True) as p:
        await p.send(make_msg(0), flush=True)
        be.down = True
        await p.send(make_msg(1))
        with pytest.raises(BusUnavailable):
            await p.flush(timeout=5)
        with pytest.raises(BusUnavailable):
            await p.send(make_msg(2))
        be.down = False
        await asyncio.sleep(0.5)
        await p.flush(timeout=10)
    assert await count_on(name, "t") == [0, 1]


async def test_refused_records_are_reported_by_flush(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    be = FaultyBackend(name)
    be.refuse = True
    async with Producer(backend=be, topic="t") as p:
        await p.send(make_msg(0))
        with pytest.raises(PublishError, match="1 record"):
            await p.flush()
        assert p.stats()["failed"] == 1
        be.refuse = False
        await p.send(make_msg(1), flush=True)  # later records are unaffected
    assert "refused" in caplog.text


async def test_bad_messages_raise_at_the_call_site(name: str) -> None:
    async with Producer(f"memory://{name}", topic="t", max_message_size=500) as p:
        with pytest.raises(MessageTooLarge):
            await p.send(make_msg(0, blob="x" * 600))
        with pytest.raises(EncodeError):
            await p.send(make_msg(0, o=object()))
        with pytest.raises(ValueError, match="no topic"):
            await Producer(f"memory://{name}").send(make_msg(0))


async def test_close_flushes_is_idempotent_and_then_refuses(name: str) -> None:
    p: Producer[MLOpsMessage] = Producer(f"memory://{name}", topic="t")
    for i in range(100):
        await p.send(make_msg(i))  # lazily started
    await p.close()
    await p.close()
    assert await count_on(name, "t") == list(range(100))
    with pytest.raises(BusClosed):
        await p.send(make_msg(1))


async def test_close_during_outage_gives_up_after_timeout_and_says_so(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    be = FaultyBackend(name)
    be.down = True
    p = Producer(backend=be, topic="t", close_timeout=0.2)
    await p.send(make_msg(0))
    await p.close()
    assert "1 message(s) undelivered" in caplog.text


async def test_seed_style_arguments(name: str) -> None:
    p = Producer(orchestrator="memory", orchestrator_endpoint=name, topic=["a", "b"])
    await p.send(make_msg(1), flush=True)
    await p.close()
    assert await count_on(name, "a") == [1] and await count_on(name, "b") == [1]


async def test_keys_and_headers_reach_the_backend(name: str) -> None:
    async with Producer(f"memory://{name}", topic="t") as p:
        await p.send(make_msg(1), key="user-1", headers={"trace": "abc", "b": b"\x00"}, flush=True)
        assert p.backend is not None
        sub = await p.backend.subscribe(["t"], group=None, auto_offset_reset="earliest")
        (d,) = await sub.fetch(10, 0.1)
        await sub.close()
    assert d.key == b"user-1"
    assert d.headers == (("trace", b"abc"), ("b", b"\x00"))


class SlowClose(FaultyBackend):
    """A client whose close() takes a while (a broker that answers slowly)."""

    closed = False

    async def close(self) -> None:
        await asyncio.sleep(0.2)
        await super().close()
        self.closed = True


async def test_close_cancelled_again_and_again_still_releases_everything(name: str) -> None:
    be = SlowClose(name)
    be.gate.clear()
    p = Producer(backend=be, topic="t", close_timeout=30)
    await p.send(make_msg(0))
    closing = asyncio.create_task(p.close())
    await asyncio.sleep(0.05)
    closing.cancel()  # while it waits for delivery
    for _ in range(2):
        await asyncio.sleep(0.05)
        closing.cancel()  # again, while it releases the client
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert be.closed  # released before the cancellation came out
    assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    await p.close()  # and safe again


async def test_a_second_close_returns_once_the_first_released_everything(name: str) -> None:
    be = SlowClose(name)
    p = Producer(backend=be, topic="t")
    await p.send(make_msg(0))
    first = asyncio.create_task(p.close())
    await asyncio.sleep(0)
    await p.close()
    assert be.closed
    await first


async def test_byte_accounting_returns_to_zero_whatever_the_cuts(name: str) -> None:
    """The sender takes a whole buffer without adding its records' sizes up (the buffer's
    share of ``buffered_bytes`` is what the batches in flight do not hold): after mixed
    sends (one topic, several, send_many, byte-bounded partial cuts) and a flush, the
    count and bytes held are zero again and every record arrived."""
    async with Producer(f"memory://{name}", topic="t", batch_size=7, batch_bytes=2000,
                        buffer_size=40, max_in_flight=2) as p:
        for i in range(30):
            if i % 3 == 0:
                await p.send(make_msg(i, pad="y" * (i * 37)), topic=["t", "u"])
            else:
                await p.send(make_msg(i, pad="y" * (i * 37)))
            if i % 10 == 9:
                await p.send_many([make_msg(100 + i + k) for k in range(5)])
        await p.flush()
        assert p.stats()["buffered"] == 0
        assert p.stats()["buffered_bytes"] == 0
    many = [100 + i + k for i in (9, 19, 29) for k in range(5)]
    assert sorted(await count_on(name, "t")) == sorted([*range(30), *many])
    assert await count_on(name, "u") == list(range(0, 30, 3))
