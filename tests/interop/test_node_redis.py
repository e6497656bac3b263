"""A Node.js producer and consumer (ioredis), written from the wire-format page, on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mlops_async import Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer
from mlops_async.backends import Delivery
from mlops_async.codec import Codec

from ._node import envelope_fields, node, node_records

pytestmark = pytest.mark.redis


async def read(url: str, topic: str, n: int) -> list[tuple[MLOpsMessage, Delivery]]:
    out: list[tuple[MLOpsMessage, Delivery]] = []
    async with Consumer(url, topic=topic, group="py", auto_offset_reset="earliest") as c:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(out) < n and loop.time() < deadline:
            msgs = await c.get_messages(timeout=0.5)
            out += zip(msgs, c.envelopes, strict=True)
        assert c.dead_lettered == 0
    return out


async def test_node_producer_to_python_consumer(
        redis_url: str, unique: Callable[[str], str]) -> None:
    topic = unique("node-to-py")
    records = node_records(n_keyed=3)
    await node("redis-produce", redis_url, topic, stdin=records)
    got = await read(redis_url, topic, len(records))
    assert [m.id for m, _ in got] == [r["message"]["id"] for r in records]  # in order
    codec = Codec()
    for (msg, d), r in zip(got, records, strict=True):
        assert msg.topic == topic
        written = {k: v for k, v in r["message"].items() if v is not None}
        again = envelope_fields(codec.encode(msg))
        again.pop("topic")
        assert again == written
        assert d.key == (None if r["key"] is None else r["key"].encode())
        assert list(d.headers or ()) == [(n, v.encode()) for n, v in r["headers"]]


async def test_python_producer_to_node_consumer(
        redis_url: str, unique: Callable[[str], str]) -> None:
    topic = unique("py-to-node")
    msgs = [MessageBuilder().with_msg_type(MessageType.PROGRESS).with_creator("py")
            .with_additional_arguments({"i": i, "bin": b"\x00", "nested": {"l": [1, None]}})
            .build() for i in range(5)]
    codec = Codec()
    async with Producer(redis_url, topic=topic) as p:
        await p.send(msgs[0])                                   # v only
        await p.send(msgs[1], key="user-1")                     # v, k
        await p.send(msgs[2], headers={"trace": "t2"})          # v, h
        await p.send(msgs[3], key="user-3", headers={"a": "1", "b": "2"})
        await p.send_many(msgs[4:])
        await p.flush()
    got: list[dict[str, Any]] = await node("redis-consume", redis_url, topic, "5")
    assert [r["message"] for r in got] == [envelope_fields(codec.encode(m)) for m in msgs]
    assert [r["key"] for r in got] == [None, "user-1", None, "user-3", None]
    assert [r["headers"] for r in got] == [[], [], [["trace", "t2"]], [["a", "1"], ["b", "2"]], []]
