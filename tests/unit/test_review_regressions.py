"""Defects found in review, each pinned by the scenario that showed it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from mlops_async import BusUnavailable, Consumer, Producer
from mlops_async.backends import Record
from mlops_async.backends.memory import MemoryBackend

from ..conftest import make_msg


class Flaky(MemoryBackend):
    """A memory bus that can be switched off: an outage without a real broker."""

    down = True

    async def connect(self) -> None:
        if self.down:
            raise BusUnavailable("down")
        await super().connect()

    async def publish(self, records: Sequence[Record]) -> None:
        if self.down:
            raise BusUnavailable("down")
        await super().publish(records)

    async def enqueue(self, records: Sequence[Record]) -> asyncio.Future[None]:
        if self.down:
            raise BusUnavailable("down")
        return await super().enqueue(records)


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


@pytest.mark.parametrize("many", [False, True])
async def test_send_many_during_an_outage_is_delivered_from_the_spool(
    tmp_path: Path, many: bool
) -> None:
    backend = Flaky(f"flaky-{uuid.uuid4().hex[:6]}")
    p: Producer = Producer("memory://x", topic="t", spool=tmp_path, backend=backend,
                           flush_timeout=0.5)
    await p.start()
    await asyncio.sleep(0.2)
    if many:
        await p.send_many([make_msg(i) for i in range(5)])
    else:
        for i in range(5):
            await p.send(make_msg(i))
    await asyncio.sleep(0.3)
    backend.down = False
    await p.flush(timeout=10)  # the sender was woken: the spool drains
    assert p.stats()["sent"] == 5
    await p.close()


@pytest.mark.redis
async def test_redis_nack_redelivers_only_what_was_nacked(redis_url: str) -> None:
    topic, group = f"rn-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    async with Producer(redis_url, topic=topic) as p:
        await p.send_many([make_msg(i) for i in range(3)], flush=True)
    async with Consumer(redis_url, topic=topic, group=group, auto_offset_reset="earliest",
                        commit="manual", poll_timeout=0.2, max_deliveries=3) as c:
        held = [await c.receive() for _ in range(3)]
        failing_msg, failing = held[2]
        for _ in range(4):
            await c.nack(failing)
            got = await c.get_messages(timeout=0.3)
            # The two still in hand are never handed out again, nor counted again.
            assert [m.id for m in got] in ([], [failing_msg.id])
            if got:
                failing = c.envelopes[-1]
        assert c.dead_lettered == 1  # only the one nacked past max_deliveries
        assert held[0][1].attempts == held[1][1].attempts == 0
