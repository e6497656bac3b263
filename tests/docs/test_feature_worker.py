"""docs_src/feature_worker.py with docs_src/queues.yml: the engine example runs as shown."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_async import Consumer, DeadLetter, Producer

DOCS_SRC = Path(__file__).resolve().parents[2] / "docs_src"


async def _read(url: str, topic: str, schema: Any, n: int) -> list[Any]:
    out: list[Any] = []
    async with Consumer(url, topic=topic, peek=True, schema=schema) as c:
        async with asyncio.timeout(10):
            while len(out) < n:
                out += await c.get_messages(timeout=0.2)
    return out


async def test_the_feature_worker_runs_with_its_queues_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(DOCS_SRC))  # the schemas' dotted paths, as with `cd`
    monkeypatch.delenv("MLOPS_BUS_URL", raising=False)
    sys.modules.pop("feature_worker", None)
    worker = importlib.import_module("feature_worker")
    url = "memory://feature-worker"  # what queues.yml names
    async with worker.app:
        async with Producer(url, topic="raw_events", schema=worker.RawEvent) as p:
            for user, value in (("a", 1.5), ("b", 0.0), ("c", -1.0)):
                await p.send(worker.RawEvent(user, value), flush=True)
        features = await _read(url, "features", worker.Feature, 1)
        letters = await _read(url, "raw_events.dlq", DeadLetter, 1)
    assert [(f.user, f.doubled) for f in features] == [("a", 3.0)]
    assert letters[0].error_type == "Reject" and letters[0].error == "negative value"
