"""A Node.js producer and consumer (kafkajs), written from the wire-format page, on Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from mlops_async import Admin, Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer
from mlops_async.backends import Delivery
from mlops_async.codec import Codec

from ._node import as_json, envelope_fields, node, node_records

pytestmark = pytest.mark.kafka
PARTITIONS = 3


async def topic_with_partitions(bootstrap: str, name: str) -> str:
    async with Admin(f"kafka://{bootstrap}") as admin:
        await admin.create_topic(name, partitions=PARTITIONS)
    return name


async def read(url: str, topic: str, n: int) -> list[tuple[MLOpsMessage, Delivery]]:
    out: list[tuple[MLOpsMessage, Delivery]] = []
    async with Consumer(url, topic=topic, group=f"{topic}-py", auto_offset_reset="earliest",
                        session_timeout_ms=6000, heartbeat_interval_ms=500) as c:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(out) < n and loop.time() < deadline:
            msgs = await c.get_messages(timeout=0.5)
            out += zip(msgs, c.envelopes, strict=True)
    return out


async def test_node_producer_to_python_consumer(
        kafka_bootstrap: str, unique: Callable[[str], str]) -> None:
    topic = await topic_with_partitions(kafka_bootstrap, unique("node-to-py"))
    records = node_records()
    await node("kafka-produce", kafka_bootstrap, topic, stdin=records)
    got = await read(f"kafka://{kafka_bootstrap}", topic, len(records))
    by_id = {m.id: (m, d) for m, d in got}
    assert len(by_id) == len(records)
    codec = Codec()
    partitioner = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    for r in records:
        msg, d = by_id[r["message"]["id"]]
        assert msg.topic == topic  # set by the consumer from the record's topic
        # Every field reads back identical: re-encoding gives what Node wrote (minus nils).
        written = {k: v for k, v in r["message"].items() if v is not None}
        again = envelope_fields(codec.encode(msg))
        again.pop("topic")
        assert again == written
        assert d.key == (None if r["key"] is None else r["key"].encode())
        assert list(d.headers or ()) == [(n, v.encode()) for n, v in r["headers"]]
        if r["key"] is not None:  # the partition the library would choose for that key
            assert d.partition == partitioner(r["key"].encode(), parts, parts)
    assert by_id["node-0003"][0].msg_type == "PAUSE"  # unknown type: delivered as is
    assert by_id["node-0002"][0].user_message is None


async def test_python_producer_to_node_consumer(
        kafka_bootstrap: str, unique: Callable[[str], str]) -> None:
    topic = await topic_with_partitions(kafka_bootstrap, unique("py-to-node"))
    msgs = [MessageBuilder().with_msg_type(MessageType.COMPLETE).with_creator_type("TRAIN")
            .with_creator("py").with_user_msg("héllo from python").with_next_task("EVALUATE")
            .with_stage("TRAIN").with_correlation_id(f"run-{i}")
            .with_additional_arguments({"i": i, "bin": b"\x01\x02", "vec": [0.5, 1.5],
                                        "map": {"ok": True, "none": None}})
            .build() for i in range(20)]
    codec = Codec()
    async with Producer(f"kafka://{kafka_bootstrap}", topic=topic) as p:
        for i, m in enumerate(msgs):
            await p.send(m, key=f"key-{i}", headers={"trace": f"t{i}"})
        await p.flush()
    got: list[dict[str, Any]] = await node("kafka-consume", kafka_bootstrap, topic, "20")
    by_id = {r["message"]["id"]: r for r in got}
    assert len(by_id) == 20
    for i, m in enumerate(msgs):
        r = by_id[m.id]
        assert r["message"] == envelope_fields(codec.encode(m))
        assert isinstance(r["message"]["created_at"], float)
        assert r["message"]["additional_arguments"]["bin"] == as_json(b"\x01\x02")
        assert r["key"] == f"key-{i}"
        assert r["headers"] == [["trace", f"t{i}"]]
        # The library's partition is murmur2 of the key as the page specifies it.
        assert r["partition"] == r["murmur2_partition"]
    assert len({r["partition"] for r in got}) > 1  # the keys did spread over partitions
