"""The durable outbox: order, bounds, one producer per spool, delivery once the broker is back."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from mlops_async import ConfigurationError, Consumer, Producer, SendTimeout
from mlops_async.backends import Record
from mlops_async.backends.base import encode_headers
from mlops_async.spool import Spool

from ...brokers import free_port
from ...conftest import make_msg
from ..faults import FaultyBackend


async def test_records_come_back_in_order_with_key_and_headers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.open()
    recs = [Record("t", bytes([i]), b"k" if i % 2 else None, (("h", b"v"),) if i % 3 else None)
            for i in range(10)]
    # Concurrent appends keep their call order and are committed together.
    await asyncio.gather(*(spool.append([r]) for r in recs))
    head = await spool.head(100)
    assert [r for _, r in head] == recs
    await spool.remove(head[3][0], 4, 4)
    assert [r for _, r in await spool.head(100)] == recs[4:]
    await spool.close()
    await spool.close()  # safe twice
    again = Spool(tmp_path)
    await again.open()
    assert again.rows == 6
    assert [r for _, r in await again.head(100)] == recs[4:]
    await again.close()


async def test_a_spool_written_by_an_earlier_version_is_delivered(tmp_path: Path) -> None:
    # Earlier versions stored a sequence number per record in a NOT NULL column.
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, "
               "topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, headers BLOB)")
    db.execute("INSERT INTO outbox (seq, topic, key, value, headers) VALUES (7, 't', NULL, ?, ?)",
               (b"old", encode_headers((("h", b"v"),))))
    db.commit()
    db.close()
    spool = Spool(tmp_path)
    await spool.open()
    new = Record("t", b"new", b"k")
    await spool.append([new])
    assert [r for _, r in await spool.head(10)] == [Record("t", b"old", None, (("h", b"v"),)), new]
    await spool.close()


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
    from ...brokers import redis_server

    server = redis_server()
    url = f"redis://127.0.0.1:{server.port}/0"
    n = 50
    p: Producer = Producer(url, topic="spooled", spool=tmp_path, flush_timeout=0.2,
                           close_timeout=0.2)
    await p.start()  # broker not there yet: sends go to the spool
    for i in range(n):
        await p.send(make_msg(i))
    assert p.stats()["spooled"] == n
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
        assert p.stats()["spooled"] == 0
    finally:
        await p.close()
        server.stop()


def on_disk(directory: Path) -> int:
    """Rows committed to the spool file, read as a new process would read it."""
    import sqlite3

    db = sqlite3.connect(directory / "outbox.sqlite3")
    try:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


async def test_sends_after_an_idle_start_during_an_outage_are_on_disk(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    p: Producer = Producer(nowhere, topic="t", spool=tmp_path, flush_timeout=0.1,
                           close_timeout=0.1)
    await p.start()
    await asyncio.sleep(0.2)  # the sender looks at the empty spool before anything is sent
    for i in range(5):
        await p.send(make_msg(i))
        assert on_disk(tmp_path) == i + 1  # accepted means on disk while the broker is away
    await p.close()


async def test_a_send_waiting_for_room_when_the_broker_goes_away_goes_to_disk(
    tmp_path: Path,
) -> None:
    from ..faults import FaultyBackend

    be = FaultyBackend(f"spool-{tmp_path.name}")
    be.gate.clear()  # the first publish hangs until the broker "fails"
    p: Producer = Producer(backend=be, topic="t", buffer_size=1, batch_size=1, spool=tmp_path,
                           flush_timeout=0.1, close_timeout=0.1)
    await p.send(make_msg(0))
    waiting = asyncio.create_task(p.send(make_msg(1)))  # memory is full: it waits
    await asyncio.sleep(0.05)
    assert not waiting.done()
    be.down = True
    be.gate.set()  # the broker refuses: the sender moves everything to the spool
    await asyncio.wait_for(waiting, 5)
    assert on_disk(tmp_path) == 2  # the waiting send was accepted onto disk, not into memory
    be.down = False
    async with Consumer(f"memory://spool-{tmp_path.name}", topic="t", group="g",
                        auto_offset_reset="earliest") as c:
        got: list[int] = []
        async with asyncio.timeout(20):
            while len(got) < 2:
                got += [m.additional_arguments["i"] for m in await c.get_messages(timeout=0.1)]
    assert got == [0, 1]
    await p.close()


async def test_flush_and_close_of_the_next_producer_wait_for_what_the_last_one_left(
    tmp_path: Path,
) -> None:
    from ..faults import FaultyBackend

    name = f"spool-next-{tmp_path.name}"
    down = FaultyBackend(name)
    down.down = True
    first: Producer = Producer(backend=down, topic="t", spool=tmp_path, flush_timeout=0.1,
                               close_timeout=0.1)
    for i in range(3):
        await first.send(make_msg(i))
    await first.close()  # the broker never came: all three stay in the spool
    p: Producer = Producer(backend=FaultyBackend(name), topic="t", spool=tmp_path)
    await p.start()
    await p.flush(timeout=10)  # nothing sent here, but the spool's records count
    assert p.stats()["sent"] == 3
    await p.send(make_msg(3))
    await p.close()
    async with Consumer(f"memory://{name}", topic="t", group="g",
                        auto_offset_reset="earliest") as c:
        got = [m.additional_arguments["i"] for m in await c.get_messages(timeout=0.1)]
    assert got == [0, 1, 2, 3]


async def test_a_failed_disk_write_is_an_error_at_send_and_never_stalls_later_flushes(
    tmp_path: Path,
) -> None:
    import sqlite3

    from mlops_async import BusError, PublishError

    from ..faults import FaultyBackend

    name = f"spool-disk-{tmp_path.name}"
    be = FaultyBackend(name)
    be.down = True
    p: Producer = Producer(backend=be, topic="t", spool=tmp_path, flush_timeout=0.1)
    await p.send(make_msg(0))
    assert p._spool is not None
    spool = p._spool.spool  # the sqlite file behind it: faults injected there

    def disk_full(batch: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    spool._insert = disk_full  # type: ignore[method-assign]
    with pytest.raises(BusError, match="disk is full"):
        await p.send(make_msg(1))  # not accepted, and the caller is told
    del spool._insert  # the disk has room again
    await p.send(make_msg(2))
    be.down = False
    # The record that never reached the disk is reported, not waited for.
    with pytest.raises(PublishError, match="1 record"):
        await p.flush(timeout=10)
    await p.close()
    async with Consumer(f"memory://{name}", topic="t", group="g",
                        auto_offset_reset="earliest") as c:
        got = [m.additional_arguments["i"] for m in await c.get_messages(timeout=0.1)]
    assert got == [0, 2]


async def test_a_spool_read_error_is_logged_and_the_sender_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    from ..faults import FaultyBackend

    name = f"spool-read-{tmp_path.name}"
    be = FaultyBackend(name)
    be.down = True
    p: Producer = Producer(backend=be, topic="t", spool=tmp_path, flush_timeout=0.1)
    await p.send(make_msg(0))
    assert p._spool is not None
    spool = p._spool.spool  # the sqlite file behind it: faults injected there
    failures = []

    def bad_read(n: int) -> object:
        failures.append(n)
        del spool._head  # fails once, then reads again
        raise sqlite3.DatabaseError("disk I/O error")

    spool._head = bad_read  # type: ignore[method-assign]
    be.down = False
    await p.send(make_msg(1))  # wakes the sender, which meets the read error
    await p.flush(timeout=10)
    assert failures and "sender failed" in caplog.text
    await p.close()
    async with Consumer(f"memory://{name}", topic="t", group="g",
                        auto_offset_reset="earliest") as c:
        got = [m.additional_arguments["i"] for m in await c.get_messages(timeout=0.1)]
    assert got == [0, 1]


@pytest.mark.parametrize("many", [False, True])
async def test_send_many_during_an_outage_is_delivered_from_the_spool(
    tmp_path: Path, many: bool
) -> None:
    backend = FaultyBackend(f"flaky-{uuid.uuid4().hex[:6]}")
    backend.down = True
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
