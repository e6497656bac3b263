"""kafka:// shares slow work by partition: ``partitioner="round_robin"`` spreads keyless
records over every partition, so each member of the group gets its share."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from mlops_async import App, ConfigurationError, MLOpsMessage, Pipeline, Producer, Queue
from mlops_async.sizing import check_pipeline

from ..backends.conftest import KAFKA_CONSUMER_OPTIONS
from ..conftest import make_msg
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
    return f"kafka://{kafka_bootstrap}"


@pytest.mark.parametrize("members", [2, 4])
async def test_round_robin_keyless_records_give_every_member_its_share(
    url: str, members: int
) -> None:
    n = 16
    handled = await share(url, members, n, KAFKA_CONSUMER_OPTIONS,
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
    assert where_rr == {k.encode(): hashed(k.encode(), 4) for k in KEYS}
    assert len(set(where_rr.values())) == 4


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


async def test_an_unknown_partitioner_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="round_robin"):
        async with Producer(url, topic="t", partitioner="sticky"):
            pass


async def test_an_app_writes_a_round_robin_queue_record_by_record(url: str) -> None:
    source, target = await make_topic(url, 4), await make_topic(url, 4)
    app = App(f"rr-{uuid.uuid4().hex[:6]}", url=url, consumer_options=KAFKA_CONSUMER_OPTIONS)
    # The reader of a queue takes neither option: they are the writer's and the topic's.
    app.queue("jobs", value=source, options={"partitions": 4, "partitioner": "round_robin"})
    app.queue("work", value=target, options={"partitioner": "round_robin"})

    @app.handler(input="jobs", outputs=["work"])
    async def forward(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("work", msg)]

    async with app:
        async with Producer(url, topic=source) as p:
            await p.send_many([make_msg(i) for i in range(40)], flush=True)
        got = await read_all(url, target, 40)
    assert [sum(1 for d in got if d.partition == k) for k in range(4)] == [10, 10, 10, 10]


def sized(url: str, topic: str, replicas: int, **options: object) -> Pipeline:
    p = Pipeline(f"sized-{uuid.uuid4().hex[:6]}", url=url,
                 queues=[Queue(name="jobs", value=topic, options=dict(options))],
                 app_options={"consumer_options": KAFKA_CONSUMER_OPTIONS})

    @p.stage(input="jobs", replicas=replicas)
    async def work(msg: MLOpsMessage) -> None: ...

    return p


async def test_the_pipeline_asks_the_broker_how_many_partitions_the_input_has(url: str) -> None:
    topic = await make_topic(url, 2)
    (message,) = await check_pipeline(sized(url, topic, 3), ["work"])
    assert f"{topic!r} has 2 partition(s)" in message and "1 replica(s) will idle" in message
    assert await check_pipeline(sized(url, topic, 2), ["work"]) == []
    # The broker's count wins over a declaration that went stale.
    assert await check_pipeline(sized(url, topic, 3, partitions=8), ["work"]) != []
    missing = f"absent-{uuid.uuid4().hex[:8]}"
    (message,) = await check_pipeline(sized(url, missing, 3), ["work"])
    assert "does not exist yet" in message


async def test_pipeline_run_logs_the_warning(url: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = await make_topic(url, 2)
    p = sized(url, topic, 3)
    with caplog.at_level(logging.WARNING, logger="mlops_async.sizing"):
        run = asyncio.create_task(p.run(install_signals=False))
        try:
            async with asyncio.timeout(30):
                while getattr(p, "_stop", None) is None:  # run() checked, then started
                    await asyncio.sleep(0.05)
        finally:
            p.stop()
            await asyncio.wait_for(run, 60)
    assert "stage 'work' runs 3 replicas" in caplog.text


async def test_the_documented_slow_stage_runs(url: str) -> None:
    path = Path(__file__).resolve().parents[2] / "docs_src" / "kafka" / "partitions.py"
    spec = importlib.util.spec_from_file_location("docs_kafka_partitions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert await module.main(url, 20) == 20


async def test_round_robin_reaches_partitions_added_meanwhile(url: str) -> None:
    topic = await make_topic(url, 2)
    # aiokafka asks for metadata every metadata_max_age_ms (5 minutes by default).
    first, second = await partitions_reached(url, topic, 8, {"metadata_max_age_ms": 200},
                                             wait=1.0)
    assert first == {0, 1}
    assert second == {0, 1, 2, 3}
