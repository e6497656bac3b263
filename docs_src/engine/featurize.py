"""The README's engine example: a handler that turns raw events into features."""

from __future__ import annotations

import msgspec

from mlops_async import App, Reject


class RawEvent(msgspec.Struct):
    user: str
    value: float


class Feature(msgspec.Struct):
    user: str
    doubled: float


app = App("feature_worker", url="kafka://localhost:9092")


@app.handler(input="raw_events", outputs=["features", "alerts"], retries=3, backoff=0.5)
async def featurize(event: RawEvent) -> list[tuple[str, msgspec.Struct]] | None:
    if event.value < 0:
        raise Reject("negative value")  # straight to the dead-letter queue
    if event.value == 0:
        return None  # filter: publish nothing
    return [("features", Feature(event.user, event.value * 2))]
