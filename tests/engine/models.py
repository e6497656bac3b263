"""Schemas and apps for engine tests (importable by dotted path and by subprocesses)."""

from __future__ import annotations

import asyncio
import os

import msgspec

from mlops_async import App


class RawEvent(msgspec.Struct, frozen=True):
    user: str
    value: float
    seq: int = 0


class Feature(msgspec.Struct, frozen=True):
    user: str
    doubled: float
    seq: int = 0


class Alert(msgspec.Struct, frozen=True):
    user: str
    reason: str


# A worker for the graceful-shutdown test: `mlops-async run tests.engine.models:slow_app`
slow_app = App("slow-worker", url=os.environ.get("ENGINE_TEST_URL"))
slow_app.queue("in", value=os.environ.get("ENGINE_TEST_IN", "engine.in"),
               schema="tests.engine.models:RawEvent")
slow_app.queue("out", value=os.environ.get("ENGINE_TEST_OUT", "engine.out"),
               schema="tests.engine.models:Feature")


@slow_app.handler(input="in", outputs=["out"])
async def slow(event: RawEvent) -> list[tuple[str, Feature]]:
    await asyncio.sleep(float(os.environ.get("ENGINE_TEST_DELAY", "0.02")))
    return [("out", Feature(event.user, event.value * 2, event.seq))]
