import asyncio

from mlops_async import Consumer, MessageBuilder, MessageType, Producer, Stage

URL = "memory://"  # or "kafka://localhost:9092", "redis://localhost:6379/0"


async def main() -> None:
    async with Consumer(URL, topic="train", group="trainers") as c, \
            Producer(URL, topic="train") as producer:
        msg = (MessageBuilder().with_msg_type(MessageType.START).with_creator_type(Stage.ETL)
               .with_argument("dataset", "s3://bucket/day=2026-11-21").build())
        await producer.send(msg, flush=True)      # returns once the broker confirmed it
        async for received in c:                  # acknowledged after the loop body
            print(received.topic, received.msg_type, dict(received.additional_arguments))
            break


asyncio.run(main())
