"""The stream engine: one handler, typed input, two outputs, a filter and a dead letter."""

from __future__ import annotations

import asyncio

# --8<-- [start:app]
import msgspec

from mlops_async import App, Reject


class RawEvent(msgspec.Struct):
    user: str
    value: float


class Feature(msgspec.Struct):
    user: str
    doubled: float


app = App("feature_worker", url="memory://features")


@app.handler(input="raw_events", outputs=["features", "alerts"], retries=3, backoff=0.5)
async def featurize(event: RawEvent) -> list[tuple[str, msgspec.Struct]] | None:
    if event.value < 0:
        raise Reject("negative value")       # straight to the dead-letter queue
    if event.value == 0:
        return None                           # filter: publish nothing
    return [("features", Feature(event.user, event.value * 2))]
# --8<-- [end:app]


# --8<-- [start:run]
from mlops_async import Consumer, DeadLetter, Producer


async def run_once(url: str = "memory://features") -> tuple[list[Feature], list[DeadLetter]]:
    async with app:                           # starts the handlers; stops (drains) on exit
        async with Producer(url, topic="raw_events", schema=RawEvent) as producer:
            for value in (1.5, 0.0, -1.0):
                await producer.send(RawEvent("u1", value))
        async with Consumer(url, topic="features", group="check", schema=Feature,
                            auto_offset_reset="earliest") as features, \
                Consumer(url, topic="raw_events.dlq", group="check", schema=DeadLetter,
                         auto_offset_reset="earliest") as dlq:
            out = await features.get_messages(max_messages=1, timeout=10)
            letters = await dlq.get_messages(max_messages=1, timeout=10)
    return out, letters
# --8<-- [end:run]


if __name__ == "__main__":
    print(asyncio.run(run_once()))
