"""The tour: send three messages, then read them in a consumer group.

    python docs_src/tour.py                           # the in-memory bus
    python docs_src/tour.py kafka://localhost:9092    # or redis://localhost:6379/0, ...

The URL comes from the first argument, else ``MLOPS_BUS_URL``, else ``memory://tour``.
The group starts after the sends and still receives them: a new group starts at
the beginning of the topic (docs/delivery.md, "Where a new group starts").
"""

from __future__ import annotations

import asyncio
import os
import sys

from mlops_async import Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer, Stage

URL = os.environ.get("MLOPS_BUS_URL") or "memory://tour"


async def main(url: str = URL, topic: str = "train", group: str = "trainers") -> list[MLOpsMessage]:
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

    received: list[MLOpsMessage] = []
    async with Consumer(url, topic=topic, group=group) as consumer:
        async for msg in consumer:                    # acknowledged after the loop body finished
            print(msg.topic, msg.user_message, msg.additional_arguments)
            received.append(msg)
            if len(received) == 3:                    # a consumer runs until stopped: the
                break                                 # tour stops after the three it sent
    return received


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else URL))
