"""A batch from ``batches()`` (auto commit) is held as one list: what must still hold."""

from __future__ import annotations

import uuid

from mlops_async import Consumer, MLOpsMessage, Producer

from ...conftest import make_msg


async def fill(url: str, n: int) -> None:
    async with Producer(url, topic="t") as p:
        await p.send_many([make_msg(i) for i in range(n)], flush=True)


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


async def test_a_batch_in_hand_is_counted_and_enveloped_then_finished_whole() -> None:
    url = f"memory://bh-{uuid.uuid4().hex[:6]}"
    await fill(url, 10)
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c:
        batches = c.batches(max_messages=4, max_wait=0)
        first = await anext(batches)
        assert ids(first) == [0, 1, 2, 3]
        assert c.stats()["unacknowledged"] == 4
        assert [d.offset for d in c.envelopes] == [0, 1, 2, 3]
        assert c.envelope is not None and c.envelope.offset == 3
        second = await anext(batches)  # the first batch is finished now
        assert ids(second) == [4, 5, 6, 7]
        assert [d.offset for d in c.envelopes] == [4, 5, 6, 7]
        await batches.aclose()
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c:
        # The second batch was finished at close: the group goes on from 8.
        assert ids(await c.get_messages(timeout=1)) == [8, 9]


async def test_one_message_of_a_batch_nacked_or_acked_alone_is_not_acknowledged_twice(
) -> None:
    url = f"memory://bh-{uuid.uuid4().hex[:6]}"
    await fill(url, 6)
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c:
        batches = c.batches(max_messages=6, max_wait=0)
        batch = await anext(batches)
        assert ids(batch) == [0, 1, 2, 3, 4, 5]
        envs = c.envelopes
        await c.nack(envs[2])  # handed back: out of the batch in hand
        await c.ack(envs[4])  # acknowledged on its own
        assert [d.offset for d in c.envelopes] == [0, 1, 3, 5]
        assert c.stats()["unacknowledged"] == 5  # four in hand, one finished
        again = await anext(batches)  # the rest of the batch finished; 2 comes again
        assert ids(again) == [2]
        await batches.aclose()
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest") as c:
        assert await c.get_messages(timeout=0.5) == []
