"""Batches on both sides, and the envelope of a message in hand."""

from __future__ import annotations

import asyncio

# --8<-- [start:batches]
from mlops_async import Consumer, MessageBuilder, MessageType, Producer


async def batches(url: str = "memory://batches") -> int:
    msgs = [MessageBuilder().with_msg_type(MessageType.DATA).with_argument("i", i).build()
            for i in range(1000)]
    async with Producer(url, topic="rows") as producer:
        await producer.send_many(msgs)      # encodes all, then queues them in one pass

    seen = 0
    async with Consumer(url, topic="rows", group="scorers",
                        auto_offset_reset="earliest") as consumer:
        async for batch in consumer.batches(max_messages=500, max_wait=0.05):
            seen += len(batch)              # the batch is acknowledged after this body
            env = consumer.envelopes[-1]    # key, headers, topic, partition, offset
            print(len(batch), env.topic, env.partition, env.offset)
            if seen == len(msgs):
                break
    return seen
# --8<-- [end:batches]


if __name__ == "__main__":
    asyncio.run(batches())
