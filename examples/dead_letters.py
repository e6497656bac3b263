"""What happens to bad input: it lands in <topic>.dlq with the reason, nothing is lost.

    python examples/dead_letters.py
"""

from __future__ import annotations

import asyncio

from mlops_async import Consumer, DeadLetter, MessageBuilder, MessageType, Producer
from mlops_async.backends import Record

URL = "memory://dlq-example"


async def main() -> None:
    async with Producer(URL, topic="events") as p:
        await p.send(MessageBuilder().with_msg_type(MessageType.DATA).with_user_msg("ok 1").build())
        assert p.backend is not None
        await p.backend.publish([Record("events", b'{"not": "an MLOpsMessage"}')])  # foreign junk
        await p.send(MessageBuilder().with_msg_type(MessageType.DATA).with_user_msg("ok 2").build())

    async with Consumer(URL, topic="events", group="g", auto_offset_reset="earliest") as c:
        for msg in await c.get_messages(timeout=1):
            print("received:", msg.user_message)

    async with Consumer(URL, topic="events.dlq", group="ops", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        for letter in await dlq.get_messages(timeout=1):
            print(f"dead letter from {letter.source_topic}@{letter.offset}: "
                  f"{letter.error_type}: {letter.error}")
            print("original bytes:", letter.original)


if __name__ == "__main__":
    asyncio.run(main())
