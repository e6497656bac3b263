"""Messages: building, deriving, and a schema of your own."""

from __future__ import annotations

import asyncio

# --8<-- [start:build]
from mlops_async import MessageBuilder, MessageType, MLOpsMessage

msg = (
    MessageBuilder()
    .with_msg_type(MessageType.COMPLETE)
    .with_creator_type("TRAIN")
    .with_correlation_id("job-17")
    .with_argument("accuracy", 0.94)
    .build()
)
assert msg.msg_type is MessageType.COMPLETE and msg.get_correlation_id() == "job-17"
try:
    msg.user_message = "changed"  # type: ignore[misc]
except AttributeError:
    pass                                    # a built message is frozen
retry = msg.to_builder().with_msg_type(MessageType.START).build()   # a new id and time
assert retry.id != msg.id and retry.additional_arguments == {"accuracy": 0.94}
# --8<-- [end:build]

# --8<-- [start:schema]
import msgspec

from mlops_async import Consumer, Producer


class Prediction(msgspec.Struct):
    model: str
    user: str
    score: float


async def own_schema(url: str = "memory://own-schema") -> Prediction:
    async with Consumer(url, topic="predictions", group="g", schema=Prediction,
                        auto_offset_reset="earliest") as consumer, \
            Producer(url, topic="predictions", schema=Prediction) as producer:
        await producer.send(Prediction("churn-v3", "user-42", 0.87), flush=True)
        async for prediction in consumer:    # decoded straight into Prediction
            return prediction
    raise AssertionError("unreachable")
# --8<-- [end:schema]


def _check() -> MLOpsMessage:
    return retry


if __name__ == "__main__":
    print(asyncio.run(own_schema()))
