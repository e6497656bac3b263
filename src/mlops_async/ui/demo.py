"""``mlops-async ui --demo``: a small pipeline on the in-memory bus, run again and again, to watch.

extract (a source) -> raw -> clean (2 replicas; a bad reading is dead-lettered)
-> features -> score (2 replicas, slower: its backlog builds up) -> scores -> report.
Each run is finite: the page shows its progress and each stage's end, then a new
run starts after a pause.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator
from typing import Any

from ..message import MessageBuilder, MessageType, MLOpsMessage
from ..pipeline import Pipeline

__all__ = ["demo_pipeline", "run_demo_ui"]


def demo_pipeline(url: str, *, records: int = 6000, rate: float = 200.0,
                  heartbeat: float = 1.0) -> Pipeline:
    """The demo's pipeline on ``url``: ``records`` readings at about ``rate`` per second."""
    p = Pipeline("demo", url=url, app_options={"heartbeat": heartbeat})
    for q in ("raw", "features", "scores"):
        p.queue(q, value=f"demo.{q}")

    @p.stage(outputs=["raw"])
    async def extract() -> AsyncIterator[tuple[str, MLOpsMessage]]:
        rng = random.Random(1)
        for i in range(records):
            # Every 250th reading is broken: clean dead-letters it.
            value = math.nan if i % 250 == 137 else rng.gauss(20.0, 4.0)
            yield "raw", (MessageBuilder().with_msg_type(MessageType.DATA)
                          .with_creator(f"sensor-{i % 8}").with_argument("i", i)
                          .with_argument("reading", value).build())
            if i % 20 == 19:
                await asyncio.sleep(20 / rate)

    @p.stage(input="raw", outputs=["features"], replicas=2, retries=1, backoff=0.01)
    async def clean(msg: MLOpsMessage) -> list[tuple[str, Any]]:
        reading = msg.additional_arguments["reading"]
        if reading is None or math.isnan(reading):
            raise ValueError(f"sensor reading {msg.additional_arguments['i']} is NaN")
        z = (reading - 20.0) / 4.0
        return [("features", msg.to_builder().with_argument("z", z).build())]

    @p.stage(input="features", outputs=["scores"], replicas=2)
    async def score(msg: MLOpsMessage) -> list[tuple[str, Any]]:
        await asyncio.sleep(0.09)  # a model call: a little slower than the source
        z = msg.additional_arguments["z"]
        return [("scores", msg.to_builder().with_argument("p", 1 / (1 + math.exp(-z))).build())]

    @p.stage(input="scores")
    async def report(msg: MLOpsMessage) -> None:
        return None

    return p


async def run_demo_ui(port: int = 8080, host: str = "127.0.0.1", *, records: int = 6000,
                      pause: float = 8.0, ready: Any = None) -> None:
    """Serve the page for the demo pipeline and run it, one run after another, until cancelled."""
    from .server import serve_ui

    # The demo's broken readings are dead-lettered on purpose: the page shows them.
    logging.getLogger("mlops_async.app").setLevel(logging.ERROR)
    url = "memory://ui-demo"
    pipeline = demo_pipeline(url, records=records)
    server = await serve_ui(url, pipeline, host=host, port=port)
    if ready is not None:
        ready(server)
    try:
        while True:
            await pipeline.run(install_signals=False)
            await asyncio.sleep(pause)
    finally:
        await server.close()
