"""numpy arrays round-trip on every backend, in MLOpsMessage arguments and in typed schemas."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
import numpy.typing as npt

from mlops_async import Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer
from mlops_async.arrays import from_json

from .conftest import Bus


class Row(msgspec.Struct):
    """A feature row as a pipeline stage would declare it."""

    i: int
    embedding: npt.NDArray[np.float32]
    window: np.ndarray


def embedding(i: int) -> np.ndarray:
    return np.random.default_rng(i).random(768, dtype=np.float32)


def window(i: int) -> np.ndarray:
    return np.asfortranarray((np.arange(12).reshape(3, 4) * i).astype(">i8"))  # F order, big-endian


async def take(c: Consumer[object], n: int, timeout: float = 30.0) -> list[object]:
    out: list[object] = []

    async def run() -> None:
        async for msg in c:
            out.append(msg)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_arrays_in_message_arguments(bus: Bus) -> None:
    topic = bus.topic()
    sent = [
        MessageBuilder().with_msg_type(MessageType.DATA).with_argument("i", i)
        .with_argument("embedding", embedding(i)).with_argument("window", window(i)).build()
        for i in range(20)
    ]
    async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
        await p.send_many(sent, flush=True)
    async with Consumer(bus.url, topic=topic, group=bus.group(), auto_offset_reset="earliest",
                        **bus.consumer_options) as c:
        got = await take(c, 20)  # type: ignore[arg-type]
    by_i = {m.additional_arguments["i"]: m for m in got if isinstance(m, MLOpsMessage)}
    assert sorted(by_i) == list(range(20))
    for i, m in by_i.items():
        emb, win = m.additional_arguments["embedding"], m.additional_arguments["window"]
        assert emb.dtype == np.float32 and emb.shape == (768,)
        np.testing.assert_array_equal(emb, embedding(i))
        assert win.dtype == np.dtype(">i8") and win.shape == (3, 4) and win.flags.f_contiguous
        np.testing.assert_array_equal(win, window(i))


async def test_arrays_in_a_typed_schema(bus: Bus) -> None:
    topic = bus.topic()
    async with Producer(bus.url, topic=topic, schema=Row, **bus.producer_options) as p:
        await p.send_many([Row(i, embedding(i), window(i)) for i in range(10)], flush=True)
    async with Consumer(bus.url, topic=topic, group=bus.group(), schema=Row,
                        auto_offset_reset="earliest", **bus.consumer_options) as c:
        got = await take(c, 10)  # type: ignore[arg-type]
    rows = sorted((r for r in got if isinstance(r, Row)), key=lambda r: r.i)
    assert [r.i for r in rows] == list(range(10))
    for r in rows:
        np.testing.assert_array_equal(r.embedding, embedding(r.i))
        np.testing.assert_array_equal(r.window, window(r.i))
        assert not r.embedding.flags.writeable  # a view over the received bytes


async def test_arrays_in_json_format(bus: Bus) -> None:
    rows_topic, msgs_topic = bus.topic(), bus.topic()
    async with Producer(bus.url, topic=rows_topic, schema=Row, format="json",
                        **bus.producer_options) as p:
        await p.send(Row(1, embedding(1), window(1)), flush=True)
    async with Producer(bus.url, topic=msgs_topic, format="json", **bus.producer_options) as p:
        await p.send(MessageBuilder().with_msg_type(MessageType.DATA)
                     .with_argument("embedding", embedding(2)).build(), flush=True)
    async with Consumer(bus.url, topic=rows_topic, group=bus.group(), schema=Row,
                        auto_offset_reset="earliest", **bus.consumer_options) as c:
        (row,) = await take(c, 1)  # type: ignore[arg-type]
    assert isinstance(row, Row)  # typed fields decode back into arrays
    np.testing.assert_array_equal(row.embedding, embedding(1))
    np.testing.assert_array_equal(row.window, window(1))
    async with Consumer(bus.url, topic=msgs_topic, group=bus.group(),
                        auto_offset_reset="earliest", **bus.consumer_options) as c2:
        (msg,) = await take(c2, 1)  # type: ignore[arg-type]
    assert isinstance(msg, MLOpsMessage)  # untyped arguments: the tagged object, then from_json
    np.testing.assert_array_equal(from_json(msg.additional_arguments)["embedding"], embedding(2))
