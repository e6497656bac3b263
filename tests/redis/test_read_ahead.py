"""The group read that runs ahead: one XREADGROUP in flight while a batch is used.

Whatever happens to that read (its caller cancelled, its connection lost, the
subscription closed while it waits), every entry is handed out exactly once or
stays pending for a re-read, nothing is acknowledged that was not, no task or
connection outlives the subscription.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from mlops_async.backends import create_backend
from mlops_async.backends.base import Delivery
from mlops_async.backends.redis import RedisBackend, _GroupSubscription, _pack_xack

from .test_redis import name, produce

pytestmark = pytest.mark.redis


async def open_sub(url: str, topic: str, group: str, **options: Any
                   ) -> tuple[RedisBackend, _GroupSubscription]:
    be = create_backend(url, **options)
    assert isinstance(be, RedisBackend)
    await be.connect()
    sub = await be.subscribe([topic], group=group, auto_offset_reset="earliest")
    assert isinstance(sub, _GroupSubscription)
    return be, sub


async def pending_ids(url: str, topic: str, group: str) -> list[bytes]:
    r = Redis.from_url(url)
    try:
        info = await r.xpending_range(f"mlops:{topic}", group, min="-", max="+", count=10_000)
        return [p["message_id"] for p in info]
    finally:
        await r.aclose()


async def read_ahead_took_entries(url: str, topic: str, group: str, handed: int) -> None:
    """Wait until the read sent with the last batch holds entries on the server."""
    async with asyncio.timeout(10):
        while len(await pending_ids(url, topic, group)) <= handed:
            await asyncio.sleep(0.01)


async def drain(sub: _GroupSubscription, n: int, max_records: int = 10) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(20):
        while len(got) < n:
            try:
                got += await sub.fetch(max_records, 0.2)
            except Exception:  # the lost read surfaces once (BusUnavailable): then re-read
                continue
    return got


def offsets(ds: list[Delivery]) -> list[str]:
    return [str(d.offset) for d in ds]


async def ten_handed_and_a_read_ahead(url: str, topic: str, group: str
                                      ) -> tuple[RedisBackend, _GroupSubscription,
                                                 list[Delivery]]:
    """30 entries; a first fetch of 10, and the read sent with it holding more on the server."""
    await produce(url, topic, 30)
    be, sub = await open_sub(url, topic, group)
    first = await sub.fetch(10, 1.0)
    assert len(first) == 10
    await read_ahead_took_entries(url, topic, group, 10)
    return be, sub, first


async def test_a_batch_is_handed_out_with_the_next_read_already_sent(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    be, sub, first = await ten_handed_and_a_read_ahead(redis_url, topic, group)
    # Read ahead, not acknowledged: all 20 pending until the consumer acks.
    assert len(await pending_ids(redis_url, topic, group)) == 20
    await sub.ack(first)
    assert len(await pending_ids(redis_url, topic, group)) == 10
    rest = await drain(sub, 20)
    assert sorted(offsets(first + rest)) == sorted(set(offsets(first + rest)))
    assert len(first + rest) == 30
    await be.close()


async def test_a_read_ahead_whose_reply_is_lost_is_read_again(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    be, sub, first = await ten_handed_and_a_read_ahead(redis_url, topic, group)
    # The read-ahead's entries are now pending on this consumer; its reply dies
    # with the task that would have read it.
    assert sub._ahead is not None
    sub._ahead.cancel()
    await asyncio.sleep(0)
    rest = await drain(sub, 20)
    everything = offsets(first + rest)
    assert len(everything) == 30 and len(set(everything)) == 30, "each entry exactly once"
    await sub.ack(first + rest)
    assert await pending_ids(redis_url, topic, group) == []
    await be.close()


async def test_a_read_ahead_whose_connection_drops_is_read_again(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    be, sub, first = await ten_handed_and_a_read_ahead(redis_url, topic, group)
    conn = sub._conn
    assert isinstance(conn, Connection)
    await conn.disconnect()  # as if the network dropped it
    rest = await drain(sub, 20)
    everything = offsets(first + rest)
    assert len(everything) == 30 and len(set(everything)) == 30
    await be.close()


async def test_a_cancelled_fetch_leaves_its_read_running_for_the_next(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    be, sub = await open_sub(redis_url, topic, group)
    waiting = asyncio.create_task(sub.fetch(10, 2.0))  # blocks: the stream is empty
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await produce(redis_url, topic, 5)  # the read still waiting on the server takes these
    got = await drain(sub, 5)
    assert len(got) == 5 and len(set(offsets(got))) == 5
    assert not sub._own_pending, "nothing was lost, so nothing had to be re-read"
    await be.close()


async def test_a_cancellation_storm_on_fetch_hands_each_entry_out_once(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    n = 200
    await produce(redis_url, topic, n)
    be, sub = await open_sub(redis_url, topic, group)
    got: list[Delivery] = []
    for i in range(300):
        task = asyncio.create_task(sub.fetch(7, 0.05))
        await asyncio.sleep([0, 0, 0.0005, 0.002][i % 4])
        task.cancel()
        try:
            got += await task
        except asyncio.CancelledError:
            pass
        except Exception:  # a dropped read surfaces once
            pass
    got += await drain(sub, n - len(got))
    assert sorted(offsets(got)) == sorted(set(offsets(got))), "handed out twice"
    assert len(got) == n
    await be.close()


async def test_a_smaller_fetch_after_a_larger_one_gets_at_most_what_it_asked(
    redis_url: str,
) -> None:
    topic, group = name("ra"), name("g")
    await produce(redis_url, topic, 50)
    be, sub = await open_sub(redis_url, topic, group)
    got = await sub.fetch(20, 1.0)  # the read sent with it asks for 20 more
    while len(got) < 50:
        batch = await sub.fetch(3, 1.0)
        assert len(batch) <= 3
        got += batch
    assert len(set(offsets(got))) == 50
    assert offsets(got) == sorted(offsets(got), key=lambda o: tuple(map(int, o.split("-"))))
    await be.close()


async def test_close_with_a_read_in_flight_leaves_no_task_and_hands_entries_back(
    redis_url: str,
) -> None:
    topic, group = name("ra"), name("g")
    await produce(redis_url, topic, 20)
    be, sub = await open_sub(redis_url, topic, group, claim_idle_ms=60_000)
    tasks_before = asyncio.all_tasks()
    first = await sub.fetch(10, 1.0)
    await read_ahead_took_entries(redis_url, topic, group, 10)
    await sub.ack(first)
    assert sub._ahead is not None
    await sub.close()
    await sub.close()  # twice: nothing happens
    assert asyncio.all_tasks() <= tasks_before, "the read was not stopped"
    assert not be._pool._in_use_connections, "a held connection was not given back"
    await be.close()
    # What the read took is handed back at once (idle past claim_idle_ms), so
    # another member claims it without waiting a minute.
    be2, other = await open_sub(redis_url, topic, group, claim_idle_ms=60_000)
    rest = await drain(other, 10)
    assert len(set(offsets(rest))) == 10 and not set(offsets(rest)) & set(offsets(first))
    await be2.close()


async def test_a_fetch_waiting_when_the_subscription_closes_returns_empty(
    redis_url: str,
) -> None:
    topic, group = name("ra"), name("g")
    be, sub = await open_sub(redis_url, topic, group)
    waiting = asyncio.create_task(sub.fetch(10, 5.0))  # blocks on the empty stream
    await asyncio.sleep(0.2)
    async with asyncio.timeout(2):  # close does not wait out the BLOCK
        await sub.close()
        assert await waiting == []
    await be.close()


async def test_acks_keep_at_least_once_across_a_dropped_ack_connection(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    await produce(redis_url, topic, 10)
    be, sub = await open_sub(redis_url, topic, group)
    got = await drain(sub, 10)
    await sub.ack(got[:5])
    conn = sub._ack_conn
    assert isinstance(conn, Connection)
    await conn.disconnect()
    await sub.ack(got[5:])  # reconnects, and writes the first XACK again with this one
    await sub.close()  # reads the last replies
    assert await pending_ids(redis_url, topic, group) == []
    await be.close()


async def test_an_ack_cancelled_while_confirming_the_last_is_sent_again(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    await produce(redis_url, topic, 20)
    be, sub = await open_sub(redis_url, topic, group)
    got = await drain(sub, 20)
    await sub.ack(got[:10])  # written; its reply is read by the next ack
    for _ in range(20):  # cancelled at every point of the next one
        task = asyncio.create_task(sub.ack(got[10:15]))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert set(await pending_ids(redis_url, topic, group)) <= {d.position for d in got[10:]}
    await sub.ack(got[10:])
    await sub.close()
    assert await pending_ids(redis_url, topic, group) == []
    await be.close()


async def test_nothing_is_acknowledged_that_was_not_acked(redis_url: str) -> None:
    topic, group = name("ra"), name("g")
    await produce(redis_url, topic, 40)
    be, sub = await open_sub(redis_url, topic, group)
    got = await drain(sub, 40, max_records=8)
    acked = got[::3]
    for i in range(0, len(acked), 4):
        await sub.ack(acked[i:i + 4])
    await sub.ack([])
    async with asyncio.timeout(10):  # the last XACK written lands; none other exists
        while len(await pending_ids(redis_url, topic, group)) != 40 - len(acked):
            await asyncio.sleep(0.01)
    left = set(await pending_ids(redis_url, topic, group))
    assert left == {d.position for d in got} - {d.position for d in acked}
    await be.close()


def test_xack_is_packed_like_redis_py_packs_it() -> None:
    ids = [b"1700000000000-%d" % i for i in range(0, 1200, 7)] + [b"1700000000001-0", b"9-9"]
    ours = _pack_xack(b"mlops:t", b"group", ids)
    theirs = b"".join(Connection().pack_command("XACK", b"mlops:t", b"group", *ids))
    assert ours == theirs


async def test_a_read_ahead_asks_only_for_what_the_window_allows(redis_url: str) -> None:
    topic, group = name("win"), name("g")
    await produce(redis_url, topic, 20)
    be, sub = await open_sub(redis_url, topic, group)
    try:
        sub.read_ahead = 0  # a slow caller's window: nothing beyond what it fetched
        got = await sub.fetch(2, 1.0)
        await asyncio.sleep(0.2)  # a read sent ahead would have taken entries by now
        assert len(got) == 2 and len(await pending_ids(redis_url, topic, group)) == 2
        sub.read_ahead = 3  # then faster: the read sent with the next batch asks for 3
        got += await sub.fetch(2, 1.0)
        await read_ahead_took_entries(redis_url, topic, group, 4)
        assert len(await pending_ids(redis_url, topic, group)) == 4 + 3
    finally:
        await sub.close()
        await be.close()


async def test_a_slow_member_holds_about_one_entry_ahead(redis_url: str) -> None:
    from mlops_async import Consumer

    topic, group = name("slow"), name("g")
    await produce(redis_url, topic, 20)
    held: list[int] = []
    async with Consumer(redis_url, topic=topic, group=group, auto_offset_reset="earliest",
                        prefetch_window=0.2) as c:
        async for msg in c:
            await asyncio.sleep(0.2)
            held.append(len(await pending_ids(redis_url, topic, group)))
            if msg.additional_arguments["i"] == 7:
                break
    # In hand, one ahead, and the last finished one until its XACK goes with the next
    # read; never the whole backlog.
    assert max(held) <= 3, held
