"""Running an app by hand: start it, publish its input, read its outputs and dead letters."""

from __future__ import annotations

from typing import Any

import msgspec

# --8<-- [start:run]
from mlops_async import App, Consumer, DeadLetter, Producer


async def run_once(app: App, url: str, raw_event: type[msgspec.Struct],
                   feature: type[Any]) -> tuple[list[Any], list[DeadLetter]]:
    async with app:                           # starts the handlers; drains and stops on exit
        async with Producer(url, topic="raw_events", schema=raw_event) as producer:
            for value in (1.5, 0.0, -1.0):
                await producer.send(raw_event("u1", value))
        async with Consumer(url, topic="features", group="check", schema=feature,
                            auto_offset_reset="earliest") as features, \
                Consumer(url, topic="raw_events.dlq", group="check", schema=DeadLetter,
                         auto_offset_reset="earliest") as dlq:
            out = await features.get_messages(max_messages=1, timeout=10)
            letters = await dlq.get_messages(max_messages=1, timeout=10)
    return out, letters
# --8<-- [end:run]
