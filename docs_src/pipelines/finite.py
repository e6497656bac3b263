"""A finite pipeline: a source, a stage with parameters and replicas, a sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

# --8<-- [start:pipeline]
import msgspec

from mlops_async import MessageBuilder, MessageType, MLOpsMessage, Pipeline


class TrainParams(msgspec.Struct):
    model_dir: str            # required
    lr: float = 0.01


pipeline = Pipeline("churn", url="memory://churn",
                    params={"train": {"model_dir": "/tmp/models"}})
seen: list[int] = []


@pipeline.stage(outputs=["records"])
async def writer() -> AsyncIterator[tuple[str, MLOpsMessage]]:
    for i in range(100):
        msg = MessageBuilder().with_msg_type(MessageType.DATA).with_argument("i", i).build()
        yield "records", msg


@pipeline.stage(input="records", outputs=["models"], params=TrainParams, replicas=2)
async def train(msg: MLOpsMessage, params: TrainParams) -> list[tuple[str, MLOpsMessage]]:
    out = msg.to_builder().with_argument("lr", params.lr).build()
    return [("models", out)]


@pipeline.stage(input="models")
async def reader(msg: MLOpsMessage) -> None:
    seen.append(msg.additional_arguments["i"])


@pipeline.on_startup            # also on_shutdown, and on_error(exc, input); same on App
async def load_model() -> None:
    seen.clear()
# --8<-- [end:pipeline]


async def main() -> list[int]:
    # --8<-- [start:run]
    await pipeline.run()        # every stage in this process; returns when the source is done
    # --8<-- [end:run]
    return sorted(seen)


if __name__ == "__main__":
    print(len(asyncio.run(main())))
