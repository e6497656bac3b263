"""A pipeline for the replica tests: `mlops-async run tests.pipeline_app:pipeline --stage work`."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from mlops_async import MLOpsMessage, Pipeline


class WorkParams(msgspec.Struct):
    spin: int = 0           # CPU work per message (loop iterations)
    tag: str = "default"


pipeline = Pipeline(
    "replicas",
    url=os.environ.get("PIPE_URL"),
    app_options={"consumer_options": {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300,
                                      "rebalance_timeout_ms": 3000}}
    if (os.environ.get("PIPE_URL") or "").startswith("kafka") else {},
)
pipeline.queue("in", value=os.environ.get("PIPE_IN", "pipe.in"))
pipeline.queue("out", value=os.environ.get("PIPE_OUT", "pipe.out"))


@pipeline.stage(input="in", outputs=["out"], params=WorkParams)
async def work(msg: MLOpsMessage, params: WorkParams) -> list[tuple[str, Any]]:
    x = 0
    for k in range(params.spin):  # a CPU-bound stage: no await in here
        x += k * k
    out = msg.to_builder().with_argument("i", msg.additional_arguments["i"])
    return [("out", out.with_argument("pid", os.getpid()).with_argument("tag", params.tag)
             .build())]
