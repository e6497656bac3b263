"""kafka+confluent:// publishing: librdkafka reports failed records only; batches are
confirmed once it holds none of their records, and a failure always reaches its batch."""

from __future__ import annotations

import asyncio

import pytest

from mlops_async import Codec, Producer
from mlops_async.backends.base import Record
from mlops_async.backends.kafka.confluent import ConfluentBackend
from mlops_async.errors import BusError

from ..backends.conftest import CONFLUENT_CONSUMER_OPTIONS
from ..brokers import tansu_server
from ..conftest import make_msg
from ._helpers import consumer, ids, make_topic, name

pytestmark = pytest.mark.kafka


async def test_batches_handed_over_back_to_back_are_each_confirmed_and_all_arrive(
    kafka_bootstrap: str,
) -> None:
    url = f"kafka+confluent://{kafka_bootstrap}"
    topic = await make_topic(url, 3)
    codec = Codec()
    backend = ConfluentBackend(kafka_bootstrap)
    await backend.connect()
    try:
        futures = [
            await backend.enqueue([Record(topic, codec.encode(make_msg(b * 50 + i)))
                                   for i in range(50)])
            for b in range(8)
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert all(f.done() and f.exception() is None for f in futures)
        assert await backend.enqueue([]) is not None  # an empty batch resolves at once
    finally:
        await backend.close()
        await backend.close()  # twice is safe
    async with consumer(url, topic, None) as c:
        got: list[int] = []
        async with asyncio.timeout(60):
            while len(got) < 400:
                got += ids(await c.get_messages(timeout=5))
    assert sorted(got) == list(range(400))


async def test_records_librdkafka_gives_up_on_fail_their_batch() -> None:
    server = tansu_server()  # never started: nothing answers on its port
    backend = ConfluentBackend(f"127.0.0.1:{server.port}", publish_timeout=1.0,
                               connect_timeout=0.5)
    try:
        with pytest.raises(BusError):
            await backend.connect()  # the client stays, and would reconnect by itself
        done = await backend.enqueue([Record("nowhere", b"\x01x") for _ in range(5)])
        with pytest.raises(BusError):
            await asyncio.wait_for(done, 20)  # message.timeout.ms = publish_timeout
    finally:
        await backend.close()


async def test_closing_with_records_in_flight_fails_their_batch_and_never_hangs() -> None:
    server = tansu_server()
    backend = ConfluentBackend(f"127.0.0.1:{server.port}", publish_timeout=60.0,
                               connect_timeout=0.5)
    with pytest.raises(BusError):
        await backend.connect()
    done = await backend.enqueue([Record("nowhere", b"\x01x") for _ in range(3)])
    await asyncio.sleep(0.3)
    assert not done.done()  # librdkafka still holds them: not confirmed
    await asyncio.wait_for(backend.close(), 40)
    assert done.done()
    with pytest.raises(BusError):
        done.result()


async def test_a_keyless_batch_to_a_topic_created_by_its_first_send_stays_together(
    kafka_bootstrap: str,
) -> None:
    """The broker creates the topic on the first metadata request, whose answer may
    have no partitions yet: records produced then would be spread over every
    partition one by one. The backend asks again until the partitions are there."""
    from confluent_kafka import Consumer as RawConsumer

    url = f"kafka+confluent://{kafka_bootstrap}"
    codec = Codec()
    for _ in range(5):  # the broker's race, before the fix, lost about one try in three
        topic = name("auto")
        async with Producer(url, topic=topic) as p:
            await p.send_many([make_msg(i) for i in range(6)], flush=True)
        raw = RawConsumer({"bootstrap.servers": kafka_bootstrap, "group.id": name("g"),
                           "auto.offset.reset": "earliest", **CONFLUENT_CONSUMER_OPTIONS})
        raw.subscribe([topic])
        got: list[tuple[int, int]] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(got) < 6 and loop.time() < deadline:
                for m in await asyncio.to_thread(raw.consume, 10, 0.5):
                    if m.error() is None:
                        got.append((m.partition(),  # type: ignore[misc]
                                    codec.decode(m.value()).additional_arguments["i"]))
        finally:
            await asyncio.to_thread(raw.close)
        assert len({part for part, _ in got}) == 1, got
        assert [i for _, i in got] == list(range(6))
