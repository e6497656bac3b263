"""The pypz seed's Hello-World, finite: a writer source, a doubler with replicas, a reader.

`mlops-async run tests.pipeline_finite:pipeline` runs it to the end; each stage can also
run as its own processes (`--stage writer`, `--stage double --replicas 2`, `--stage
reader`) sharing MLOPS_RUN_ID. The reader appends what it read to $FINITE_OUT.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from mlops_async import MessageBuilder, MessageType, MLOpsMessage, Pipeline

N = int(os.environ.get("FINITE_N", "50"))
OUT = os.environ.get("FINITE_OUT")
PREFIX = os.environ.get("FINITE_PREFIX", "finite")


class WriterParams(msgspec.Struct):
    count: int = N


pipeline = Pipeline("finite", url=os.environ.get("FINITE_URL"),
                    app_options={"consumer_options": {"session_timeout_ms": 3000,
                                                      "heartbeat_interval_ms": 300,
                                                      "rebalance_timeout_ms": 3000}}
                    if (os.environ.get("FINITE_URL") or "").startswith("kafka") else {})
pipeline.queue("records", value=f"{PREFIX}.records")
pipeline.queue("doubled", value=f"{PREFIX}.doubled")
pipeline.queue("done", value=f"{PREFIX}.done")
events: list[str] = []


@pipeline.on_startup
def started() -> None:
    events.append("startup")


@pipeline.on_shutdown
async def stopped() -> None:
    events.append("shutdown")


@pipeline.stage(outputs=["records"], params=WriterParams)
async def writer(params: WriterParams) -> AsyncIterator[tuple[str, MLOpsMessage]]:
    for i in range(params.count):
        yield "records", (MessageBuilder().with_msg_type(MessageType.DATA)
                          .with_creator_type("ETL").with_creator("writer")
                          .with_user_msg("Hello World").with_argument("i", i).build())


@pipeline.stage(input="records", outputs=["doubled"], replicas=2)
async def double(msg: MLOpsMessage) -> list[tuple[str, Any]]:
    i = msg.additional_arguments["i"]
    return [("doubled", msg.to_builder().with_argument("x2", 2 * i).build())]


@pipeline.stage(input="doubled")
async def reader(msg: MLOpsMessage) -> None:
    if OUT:
        with open(OUT, "a") as f:  # tiny and local: the test reads it afterwards
            f.write(f"{msg.additional_arguments['i']}\n")
