"""The durable outbox: order, bounds, one producer per spool, delivery once the broker is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlops_async import ConfigurationError, Consumer, Producer, SendTimeout
from mlops_async.backends import Record
from mlops_async.spool import Spool

from ..brokers import free_port
from ..conftest import make_msg


async def test_records_come_back_in_order_with_key_and_headers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.open()
    recs = [Record("t", bytes([i]), b"k" if i % 2 else None, (("h", b"v"),) if i % 3 else None)
            for i in range(10)]
    # Concurrent appends keep their call order and are committed together.
    await asyncio.gather(*(spool.append([(i + 1, r)]) for i, r in enumerate(recs)))
    head = await spool.head(100)
    assert [r for _, _, r in head] == recs
    assert [seq for _, seq, _ in head] == list(range(1, 11))
    await spool.remove(head[3][0], 4, 4)
    assert [r for _, _, r in await spool.head(100)] == recs[4:]
    await spool.close()
    await spool.close()  # safe twice
    again = Spool(tmp_path)
    await again.open()
    assert again.rows == 6
    # Sequence numbers belong to the process that wrote them: an earlier one's are 0.
    assert {seq for _, seq, _ in await again.head(100)} == {0}
    await again.close()


async def test_one_producer_per_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    await first.open()
    with pytest.raises(ConfigurationError, match="in use"):
        await Spool(tmp_path).open()
    await first.close()
    second = Spool(tmp_path)
    await second.open()  # free again
    await second.close()


async def test_spool_is_bounded_and_send_times_out_clearly(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    p: Producer = Producer(nowhere, topic="t", spool=tmp_path, spool_max_bytes=2000,
                           send_timeout=0.2, flush_timeout=0.1)
    await p.start()
    with pytest.raises(SendTimeout, match="spool full"):
        for i in range(100):
            await p.send(make_msg(i))
    await p.close()


def test_spool_and_strict_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Producer("memory://x", topic="t", spool=tmp_path, strict=True)


@pytest.mark.redis
async def test_messages_sent_during_an_outage_arrive_in_order_after_it(tmp_path: Path) -> None:
    from ..brokers import redis_server

    server = redis_server()
    url = f"redis://127.0.0.1:{server.port}/0"
    n = 50
    p: Producer = Producer(url, topic="spooled", spool=tmp_path, flush_timeout=0.2,
                           close_timeout=0.2)
    await p.start()  # broker not there yet: sends go to the spool
    for i in range(n):
        await p.send(make_msg(i))
    assert p._spool is not None and p._spool.rows == n
    server.start()
    try:
        async with Consumer(url, topic="spooled", auto_offset_reset="earliest") as c:
            got: list[int] = []
            async with asyncio.timeout(30):
                while len(got) < n:
                    got += [m.additional_arguments["i"] for m in await c.get_messages(
                        timeout=0.2)]
        assert got == list(range(n))  # delivered once the broker came, in order
        await p.flush()
        assert p._spool.rows == 0
    finally:
        await p.close()
        server.stop()
