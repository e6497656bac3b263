"""The stream engine's first example: one handler, its queues in queues.yml.

    cd docs_src && mlops-async run feature_worker:app --url kafka://localhost:9092

The queues file beside this one names the topics and their schemas; ``--url`` (or
``MLOPS_BUS_URL``) overrides the bus it names.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from mlops_async import App, Reject


class RawEvent(msgspec.Struct):
    user: str
    value: float


class Feature(msgspec.Struct):
    user: str
    doubled: float


app = App("feature_worker", url=os.environ.get("MLOPS_BUS_URL") or None,
          config=Path(__file__).with_name("queues.yml"))


@app.handler(input="raw_events", outputs=["features", "alerts"], retries=3, backoff=0.5)
async def featurize(event: RawEvent) -> list[tuple[str, msgspec.Struct]] | None:
    if event.value < 0:
        raise Reject("negative value")       # straight to the dead-letter queue
    if event.value == 0:
        return None                           # filter: publish nothing
    return [("features", Feature(event.user, event.value * 2))]
