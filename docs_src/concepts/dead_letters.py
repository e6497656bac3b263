"""Bad input lands in <topic>.dlq with the reason; a DeadLetter reader reads every letter."""

from __future__ import annotations

import asyncio

from mlops_async import DeadLetter

# --8<-- [start:dead_letters]
from mlops_async import Consumer, MessageBuilder, MessageType, Producer
from mlops_async.backends import Record


async def dead_letters(url: str = "memory://dead-letters") -> list[DeadLetter]:
    async with Producer(url, topic="events") as producer:
        await producer.send(MessageBuilder().with_msg_type(MessageType.DATA).build())
        assert producer.backend is not None
        await producer.backend.publish([
            Record("events", b'{"not": "an MLOpsMessage"}'),     # a foreign producer's junk
            Record("events", b"\x01" + b"\x80" * 2_000_000),     # 2 MB: over the 1 MiB limit
        ])

    async with Consumer(url, topic="events", group="workers",
                        auto_offset_reset="earliest") as consumer:
        good = await consumer.get_messages(timeout=1)   # the bad records went to events.dlq
        assert len(good) == 1

    letters: list[DeadLetter] = []
    async with Consumer(url, topic="events.dlq", group="ops", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        for _ in range(10):
            for letter in await dlq.get_messages(timeout=1):
                print(f"{letter.source_topic}@{letter.offset}: {letter.error_type}: "
                      f"{letter.error[:60]} ({len(letter.original)} bytes kept)")
                letters.append(letter)
            if len(letters) == 2:
                break
    return letters
# --8<-- [end:dead_letters]


if __name__ == "__main__":
    asyncio.run(dead_letters())
