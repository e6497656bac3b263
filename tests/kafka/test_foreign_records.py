"""Records written by a plain aiokafka producer: tombstones, foreign bytes, odd headers.

Whatever a topic holds, the consumer keeps going: good records arrive, null
values (tombstones) are skipped and counted, everything else is dead-lettered
whole with the reason, and only the library's own errors ever come out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_async import Codec, Consumer, DeadLetter, MLOpsMessage

from ..backends.conftest import KAFKA_CONSUMER_OPTIONS
from ..conftest import make_msg
from .test_kafka import make_topic, name

pytestmark = pytest.mark.kafka
CODEC: Codec[MLOpsMessage] = Codec()

# (value, key, headers) as a foreign producer writes them; value None is a tombstone.
Raw = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def is_good(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        CODEC.decode(value)
    except Exception:
        return False
    return True


async def write_raw(bootstrap: str, topic: str, records: list[Raw]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value, key, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers or None)
    finally:
        await producer.stop()


async def consume_all(
    url: str, topic: str, records: list[Raw], group: str | None
) -> tuple[list[MLOpsMessage], Consumer[MLOpsMessage]]:
    """Read until every good record arrived and every bad one was dealt with."""
    goods = sum(is_good(v) for v, _, _ in records)
    tombstones = sum(v is None for v, _, _ in records)
    bad = len(records) - goods - tombstones
    got: list[MLOpsMessage] = []
    opts: dict[str, Any] = dict(KAFKA_CONSUMER_OPTIONS) if group else {}
    consumer: Consumer[MLOpsMessage] = Consumer(
        url, topic=topic, group=group, auto_offset_reset="earliest", **opts
    )
    async with consumer:
        async with asyncio.timeout(60):
            while (len(got), consumer.dead_lettered, consumer.tombstones) != (
                goods, bad, tombstones
            ):
                # Only the library's errors may come out of a consumer: none here.
                got.extend(await consumer.get_messages(timeout=0.5))
    return got, consumer


async def dead_letters(url: str, topic: str, n: int) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    async with Consumer(url, topic=f"{topic}.dlq", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        async with asyncio.timeout(30):
            while len(out) < n:
                out.extend(await dlq.get_messages(timeout=0.5))
    return out


async def test_a_tombstone_is_skipped_counted_and_committed(kafka_bootstrap: str) -> None:
    url = f"kafka://{kafka_bootstrap}"
    topic, group = await make_topic(url, 1), name("g")
    good = [CODEC.encode(make_msg(i)) for i in range(3)]
    records: list[Raw] = [(good[0], None, []), (None, b"deleted-key", []),
                          (good[1], None, []), (good[2], b"k", [])]
    await write_raw(kafka_bootstrap, topic, records)
    got, consumer = await consume_all(url, topic, records, group)
    assert [m.additional_arguments["i"] for m in got] == [0, 1, 2]
    assert consumer.stats()["tombstones"] == 1
    assert consumer.dead_lettered == 0
    # The tombstone and the records around it were acknowledged: the group has nothing left.
    async with Consumer(url, topic=topic, group=group, **KAFKA_CONSUMER_OPTIONS) as again:
        assert await again.get_messages(timeout=6.0) == []


payloads = st.one_of(
    st.none(),  # tombstone
    st.just(b""),
    st.binary(max_size=300),
    st.builds(lambda m, b: bytes([m]) + b, st.sampled_from([0x01, 0x02, ord("{")]),
              st.binary(max_size=200)),
    st.integers(0, 10_000).map(lambda i: CODEC.encode(make_msg(i))),
)
# aiokafka refuses a record with neither key nor value: a tombstone always has a key.
raw_records = st.tuples(
    payloads,
    st.one_of(st.none(), st.binary(max_size=40)),
    st.lists(st.tuples(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                               max_size=20), st.binary(max_size=40)), max_size=3),
).map(lambda r: (r[0], b"k" if r[0] is None and r[1] is None else r[1], r[2]))


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=st.lists(raw_records, min_size=1, max_size=25))
def test_any_foreign_record_arrives_or_is_dead_lettered_whole(
    kafka_bootstrap: str, records: list[Raw]
) -> None:
    url = f"kafka://{kafka_bootstrap}"

    async def scenario() -> None:
        topic = await make_topic(url, 2)
        await write_raw(kafka_bootstrap, topic, records)
        got, _ = await consume_all(url, topic, records, group=None)
        expected_good = Counter(CODEC.decode(v).additional_arguments["i"]
                                for v, _, _ in records if is_good(v))
        assert Counter(m.additional_arguments["i"] for m in got) == expected_good
        bad = [(v, k, h) for v, k, h in records if v is not None and not is_good(v)]
        letters = await dead_letters(url, topic, len(bad))
        assert len(letters) == len(bad)
        # Each dead letter holds the record whole: value, key and headers verbatim.
        assert Counter((x.original, x.key, tuple(map(tuple, x.headers or ())))
                       for x in letters) == Counter(
            (v, k, tuple(h)) for v, k, h in bad)
        assert all(x.source_topic == topic and x.error for x in letters)

    asyncio.run(scenario())
