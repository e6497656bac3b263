"""A backend of your own, registered under a URL scheme."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

# --8<-- [start:backend]
from mlops_async import Consumer, MLOpsMessage, Producer, register_backend
from mlops_async.backends import Record
from mlops_async.backends.memory import MemoryBackend


class CountingBackend(MemoryBackend):
    """The in-memory bus, counting the records it publishes per topic."""

    scheme = "counting"
    published: ClassVar[dict[str, int]] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CountingBackend:
        return cls(url.split("://", 1)[1].strip("/") or "default", **options)

    async def publish(self, records: Sequence[Record]) -> None:
        await super().publish(records)       # return only once the broker confirmed it
        for r in records:
            self.published[r.topic] = self.published.get(r.topic, 0) + 1


register_backend("counting", CountingBackend)   # or the mlops_async.backends entry point
# --8<-- [end:backend]


async def use_it(url: str = "counting://demo") -> dict[str, int]:
    from mlops_async import MessageBuilder, MessageType

    async with Consumer(url, topic="jobs", group="g", auto_offset_reset="earliest") as c, \
            Producer(url, topic="jobs") as p:
        await p.send(MessageBuilder().with_msg_type(MessageType.START).build(), flush=True)
        msg: MLOpsMessage = await anext(aiter(c))
        assert msg.topic == "jobs"
    return dict(CountingBackend.published)


if __name__ == "__main__":
    print(asyncio.run(use_it()))
