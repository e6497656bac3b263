"""send_many: one pass, same rules as send."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from mlops_async import Consumer, EncodeError, MessageTooLarge, MLOpsMessage, Producer

from ...conftest import make_msg


def url() -> str:
    return f"memory://many-{uuid.uuid4().hex[:8]}"


async def read(u: str, topic: str, n: int) -> list[int]:
    out: list[int] = []
    async with Consumer(u, topic=topic, auto_offset_reset="earliest") as c:
        async with asyncio.timeout(10):
            while len(out) < n:
                out += [m.additional_arguments["i"] for m in await c.get_messages(timeout=0.1)]
    return out


async def test_order_kept_through_backpressure_and_across_topics() -> None:
    u = url()
    async with Producer(u, topic=["a", "b"], batch_size=64, buffer_size=128) as p:
        await p.send_many([make_msg(i) for i in range(1000)], flush=True)
        assert p.stats()["sent"] == 2000
    assert await read(u, "a", 1000) == list(range(1000))
    assert await read(u, "b", 1000) == list(range(1000))


async def test_a_bad_message_raises_before_any_is_queued() -> None:
    u = url()
    big = make_msg(1, blob="x" * 5000)
    async with Producer(u, topic="t", max_message_size=1024) as p:
        with pytest.raises(MessageTooLarge):
            await p.send_many([make_msg(0), big, make_msg(2)])
        assert p.ledger.queued == 0
        await p.send_many([], flush=True)  # nothing to do


async def test_an_unencodable_message_from_a_generator_raises_before_any_is_queued() -> None:
    u = url()
    async with Producer(u, topic="t") as p:
        msgs = (make_msg(i, o=object()) if i == 2 else make_msg(i) for i in range(5))
        with pytest.raises(EncodeError, match="cannot encode"):
            await p.send_many(msgs)
        assert p.ledger.queued == 0
        await p.send_many((make_msg(i) for i in range(3)), flush=True)  # a generator, read once
    assert await read(u, "t", 3) == [0, 1, 2]


async def test_key_and_headers_apply_to_every_message() -> None:
    u = url()
    async with Producer(u, topic="t") as p:
        await p.send_many([make_msg(i) for i in range(5)], key="k", headers={"h": "v"},
                          flush=True)
    async with Consumer(u, topic="t", auto_offset_reset="earliest") as c:
        got: list[MLOpsMessage] = []
        async with asyncio.timeout(10):
            while len(got) < 5:
                got += await c.get_messages(timeout=0.1)
        assert all(e.key == b"k" and e.headers == (("h", b"v"),) for e in c.envelopes)


async def test_payloads_encoded_in_place_are_each_their_own() -> None:
    """send() and send_many() encode into one reused buffer: every payload queued must
    still be its own bytes, whatever came before it (a failed encode, a larger message,
    JSON), so each is read back as sent."""
    for fmt in ("msgpack", "json"):
        u = url()
        big = make_msg(-1, blob="x" * 5000)
        async with Producer(u, topic="t", format=fmt) as p:
            await p.send(big)
            with pytest.raises(EncodeError):
                await p.send(make_msg(0, o=object()))  # fails half-way through the buffer
            await p.send(m0 := make_msg(0))  # shorter than what the buffer held: no tail left
            await p.send_many([make_msg(i) for i in range(1, 4)])
            with pytest.raises(EncodeError):
                await p.send_many([make_msg(9), make_msg(9, o=object())])
            await p.send_many([make_msg(4)], flush=True)
        got: list[MLOpsMessage] = []
        async with Consumer(u, topic="t", auto_offset_reset="earliest") as c:
            async with asyncio.timeout(10):
                while len(got) < 6:
                    got += await c.get_messages(timeout=0.1)
        assert [m.additional_arguments["i"] for m in got] == [-1, 0, 1, 2, 3, 4]
        assert got[0].additional_arguments["blob"] == "x" * 5000
        assert got[1] == msgspec.structs.replace(m0, topic="t")
