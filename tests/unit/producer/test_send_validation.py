"""A Producer with ``schema=`` refuses, at send, what its consumers would refuse.

msgspec encodes whatever values a Struct holds (its constructor checks no
types), so a float64 array in a ``float32`` field went out and only the
consumer found out, dead-lettering it. The producer now checks declared array
dtypes on every send (nothing for schemas without typed arrays), and with
``validate=True`` decodes each encoded message as the consumer will.
"""

from __future__ import annotations

import uuid

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from mlops_async import Consumer, EncodeError, Producer


class Emb(msgspec.Struct):
    id: str
    vec: npt.NDArray[np.float32]
    extra: npt.NDArray[np.int64] | None = None


class Count(msgspec.Struct):
    name: str
    n: int


def _url() -> str:
    return f"memory://validate-{uuid.uuid4().hex[:8]}"


async def test_a_float64_array_in_a_float32_field_fails_on_send() -> None:
    async with Producer(_url(), topic="emb", schema=Emb) as p:
        with pytest.raises(EncodeError, match=r"vec.*float32.*float64"):
            await p.send(Emb("a", np.zeros(4, np.float64)))
        with pytest.raises(EncodeError, match="vec"):
            await p.send_many([Emb("b", np.zeros(4, np.float32)),
                               Emb("c", np.zeros(4, np.float64))])
        with pytest.raises(EncodeError, match="extra"):
            p.send_nowait(Emb("d", np.zeros(4, np.float32), np.zeros(2, np.float32)), "emb")
        assert p.stats()["buffered"] == 0  # nothing of the refused calls was queued


async def test_right_arrays_go_through_and_decode() -> None:
    url = _url()
    async with Consumer(url, topic="emb", group="g", schema=Emb) as c:
        async with Producer(url, topic="emb", schema=Emb) as p:
            await p.send(Emb("a", np.arange(4, dtype=np.float32)), flush=True)
            await p.send(Emb("b", np.ones(2, np.float32), np.arange(3)), flush=True)
        got = await c.get_messages(timeout=1)
    assert [m.id for m in got] == ["a", "b"] and c.dead_lettered == 0
    assert got[0].vec.dtype == np.float32


async def test_validate_false_sends_it_and_the_consumer_dead_letters_it() -> None:
    url = _url()
    async with Producer(url, topic="emb", schema=Emb, validate=False) as p:
        await p.send(Emb("a", np.zeros(4, np.float64)), flush=True)
    async with Consumer(url, topic="emb", group="g", schema=Emb) as c:
        assert await c.get_messages(timeout=0.5) == []
        assert c.dead_lettered == 1


async def test_validate_true_checks_every_field_as_the_consumer_would() -> None:
    async with Producer(_url(), topic="n", schema=Count) as p:
        await p.send(Count("ok", "3"), flush=True)  # type: ignore[arg-type]  # not checked
    async with Producer(_url(), topic="n", schema=Count, validate=True) as p:
        with pytest.raises(EncodeError, match=r"Count.*Expected `int`, got `str` - at `\$.n`"):
            await p.send(Count("bad", "3"))  # type: ignore[arg-type]
        await p.send(Count("good", 3), flush=True)
