"""The tour: build a message, send it three ways, read it in a group."""

from __future__ import annotations

import asyncio

from mlops_async import MLOpsMessage

# --8<-- [start:tour]
from mlops_async import Consumer, MessageBuilder, MessageType, Producer, Stage


async def tour(url: str = "memory://tour", topic: str = "train",
               group: str = "trainers") -> list[MLOpsMessage]:
    msg = (
        MessageBuilder()
        .with_msg_type(MessageType.START)
        .with_creator_type(Stage.ETL)
        .with_creator("etl-worker-1")
        .with_user_msg("Hello World")
        .with_next_task(Stage.TRAIN)
        .with_argument("dataset", "s3://bucket/day=2026-11-21")
        .build()                       # frozen: assigning to a field raises
    )

    async with Producer(url, topic=topic) as producer:
        await producer.send(msg)                      # queued; batched to the broker
        await producer.send(msg, key="user-42")       # same key -> same partition, in order
        await producer.send(msg, flush=True)          # returns once the broker confirmed it

    received = []
    async with Consumer(url, topic=topic, group=group,
                        auto_offset_reset="earliest") as consumer:
        async for msg in consumer:                    # acknowledged after the loop body finished
            print(msg.topic, msg.user_message, msg.additional_arguments)
            received.append(msg)
            if len(received) == 3:
                break
    return received
# --8<-- [end:tour]


if __name__ == "__main__":
    asyncio.run(tour())
