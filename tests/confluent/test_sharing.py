"""kafka+confluent:// shares slow work by partition: ``partitioner="round_robin"`` spreads
keyless records over every partition, so each member of the group gets its share."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from mlops_async import ConfigurationError, MLOpsMessage, Pipeline, Producer, Queue
from mlops_async.backends.kafka.confluent import backend as confluent
from mlops_async.sizing import check_pipeline

from ..backends.conftest import CONFLUENT_CONSUMER_OPTIONS
from ..kafka_sharing import (
    assert_even,
    hashed,
    make_topic,
    partitions_reached,
    read_all,
    send_keyed,
    share,
)

pytestmark = pytest.mark.kafka

KEYS = [f"user-{i}" for i in range(40)]


@pytest.fixture
def url(kafka_bootstrap: str) -> str:
    return f"kafka+confluent://{kafka_bootstrap}"


@pytest.mark.parametrize("members", [2, 4])
async def test_round_robin_keyless_records_give_every_member_its_share(
    url: str, members: int
) -> None:
    n = 16
    handled = await share(url, members, n, CONFLUENT_CONSUMER_OPTIONS,
                          {"partitioner": "round_robin"})
    assert_even(handled, n)


async def test_round_robin_spreads_one_burst_over_every_partition(url: str) -> None:
    topic = await make_topic(url, 4)
    async with Producer(url, topic=topic, partitioner="round_robin") as p:
        await p.send_many([{"i": i} for i in range(40)])  # one batch for the backend
    got = await read_all(url, topic, 40)
    per_partition = [sum(1 for d in got if d.partition == k) for k in range(4)]
    assert per_partition == [10, 10, 10, 10]


async def test_keyed_records_keep_their_key_hash_under_round_robin(url: str) -> None:
    rr, default = await make_topic(url, 4), await make_topic(url, 4)
    await send_keyed(url, rr, KEYS, partitioner="round_robin")
    await send_keyed(url, default, KEYS)
    where_rr = {d.key: d.partition for d in await read_all(url, rr, len(KEYS))}
    where_default = {d.key: d.partition for d in await read_all(url, default, len(KEYS))}
    assert where_rr == where_default
    # The same partition as kafka:// and the Java client: murmur2 of the key.
    assert where_rr == {k.encode(): hashed(k.encode(), 4) for k in KEYS}


async def test_a_raw_aiokafka_producer_is_unaffected(url: str, kafka_bootstrap: str) -> None:
    """round_robin is an option of our producer, not of the topic: another client's
    records land where its own partitioner puts them (keys: the same murmur2)."""
    topic = await make_topic(url, 4)
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await raw.start()
    try:
        for key in KEYS:
            await raw.send_and_wait(topic, b"raw", key=key.encode())
    finally:
        await raw.stop()
    await send_keyed(url, topic, KEYS, partitioner="round_robin")
    got = await read_all(url, topic, 2 * len(KEYS))
    raw_where = {d.key: d.partition for d in got if d.value == b"raw"}
    ours_where = {d.key: d.partition for d in got if d.value != b"raw"}
    assert raw_where == ours_where == {k.encode(): hashed(k.encode(), 4) for k in KEYS}


@pytest.mark.parametrize("value", ["consistent_random", "murmur2_random", "sticky"])
async def test_librdkafkas_partitioners_are_refused_naming_ours(url: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match="round_robin"):
        async with Producer(url, topic="t", partitioner=value):
            pass


async def test_the_pipeline_asks_the_broker_how_many_partitions_the_input_has(url: str) -> None:
    topic = await make_topic(url, 2)
    p = Pipeline(f"sized-{uuid.uuid4().hex[:6]}", url=url, queues=[Queue(name="jobs", value=topic)])

    @p.stage(input="jobs", replicas=3)
    async def work(msg: MLOpsMessage) -> None: ...

    (message,) = await check_pipeline(p, ["work"])
    assert f"{topic!r} has 2 partition(s)" in message and "1 replica(s) will idle" in message


async def test_round_robin_reaches_partitions_added_meanwhile(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confluent, "_RELEARN_EVERY", 0.2)  # a minute by default
    topic = await make_topic(url, 2)
    first, second = await partitions_reached(url, topic, 8, {}, wait=1.0)
    assert first == {0, 1}
    assert second == {0, 1, 2, 3}
