"""The two Kafka backends share topics, consumer groups and partitioning.

``kafka://`` (aiokafka) and ``kafka+confluent://`` (librdkafka) read each
other's topics, a consumer group can move from one to the other keeping its
committed offsets, and a key lands on the same partition whichever backend
sent it (Kafka's murmur2, as the Java client).
"""

from __future__ import annotations

import asyncio

import pytest

from mlops_async import Consumer, MLOpsMessage, Producer
from mlops_async.backends import create_backend

from ..backends.conftest import CONFLUENT_CONSUMER_OPTIONS, KAFKA_CONSUMER_OPTIONS
from ..conftest import make_msg
from ._helpers import ids, make_topic, name, produce

pytestmark = pytest.mark.kafka


def urls(bootstrap: str) -> dict[str, str]:
    return {"aiokafka": f"kafka://{bootstrap}", "confluent": f"kafka+confluent://{bootstrap}"}


def group_consumer(url: str, topic: str, group: str) -> Consumer[MLOpsMessage]:
    opts = CONFLUENT_CONSUMER_OPTIONS if url.startswith("kafka+confluent") else (
        KAFKA_CONSUMER_OPTIONS)
    return Consumer(url, topic=topic, group=group, auto_offset_reset="earliest",
                    commit="manual", **opts)  # type: ignore[arg-type]


@pytest.mark.parametrize("writer,reader", [("aiokafka", "confluent"), ("confluent", "aiokafka")])
async def test_each_backend_reads_the_others_topics(
    kafka_bootstrap: str, writer: str, reader: str
) -> None:
    u = urls(kafka_bootstrap)
    topic = await make_topic(u[writer], 3)
    async with Producer(u[writer], topic=topic) as p:
        for i in range(30):
            await p.send(make_msg(i), key=f"k{i % 7}", headers={"trace": f"t{i}"})
        await p.flush()
    got: list[MLOpsMessage] = []
    async with Consumer(u[reader], topic=topic, auto_offset_reset="earliest") as c:
        async with asyncio.timeout(30):
            while len(got) < 30:
                got += await c.get_messages(timeout=1)
    assert sorted(ids(got)) == list(range(30))


async def test_a_group_moves_between_backends_keeping_its_offsets(kafka_bootstrap: str) -> None:
    u = urls(kafka_bootstrap)
    topic, group = await make_topic(u["aiokafka"], 1), name("g")
    await produce(u["aiokafka"], topic, 30)
    order = ["aiokafka", "confluent", "aiokafka"]  # there and back again
    taken: list[int] = []
    for step, backend in enumerate(order):
        async with group_consumer(u[backend], topic, group) as c:
            got: list[int] = []
            async with asyncio.timeout(40):
                while len(got) < 10:
                    got += ids(await c.get_messages(timeout=1, max_messages=10 - len(got)))
            await c.commit()
        # One partition: each member starts exactly where the previous one committed.
        assert got == list(range(10 * step, 10 * step + 10)), (backend, got)
        taken += got
    assert taken == list(range(30))


async def test_keys_land_on_the_same_partitions_from_either_backend(
    kafka_bootstrap: str,
) -> None:
    u = urls(kafka_bootstrap)
    partitions: dict[str, dict[bytes, int]] = {}
    for backend, url in u.items():
        topic = await make_topic(url, 5)
        async with Producer(url, topic=topic) as p:
            for i in range(40):
                await p.send(make_msg(i), key=f"user-{i}")
            await p.flush()
        be = create_backend(url)
        await be.connect()
        try:
            sub = await be.subscribe([topic], group=None, auto_offset_reset="earliest")
            found: dict[bytes, int] = {}
            async with asyncio.timeout(30):
                while len(found) < 40:
                    for d in await sub.fetch(100, 1.0):
                        assert d.key is not None
                        found[d.key] = d.partition
            await sub.close()
        finally:
            await be.close()
        partitions[backend] = found
    assert partitions["aiokafka"] == partitions["confluent"]
    assert len(set(partitions["confluent"].values())) > 1, "keys spread over partitions"
