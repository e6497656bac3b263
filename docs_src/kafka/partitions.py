"""A slow stage on Kafka: partitions for its replicas, keyless work spread record by record.

Run against a broker: ``python docs_src/kafka/partitions.py kafka://localhost:9092``.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from mlops_async import Admin, App, Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer


# --8<-- [start:topic]
async def create_requests_topic(url: str, topic: str = "embed.requests") -> None:
    # At least as many partitions as the stage will ever run replicas.
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=4)
# --8<-- [end:topic]


# --8<-- [start:producer]
async def send_requests(url: str, n: int, topic: str = "embed.requests") -> None:
    # Keyless records, each to the next partition: every replica gets its share.
    async with Producer(url, topic=topic, partitioner="round_robin") as producer:
        for i in range(n):
            msg = MessageBuilder().with_msg_type(MessageType.DATA).with_argument("i", i).build()
            await producer.send(msg)
# --8<-- [end:producer]


# --8<-- [start:app]
def embedder(url: str, requests: str = "embed.requests",
             vectors: str = "embed.vectors") -> App:
    app = App("embedder", url=url)
    # partitions: what the topic has (checked by Pipeline and deploy k8s against replicas);
    # partitioner: how this app writes the queue (the next stage is slow too).
    app.queue("requests", value=requests, options={"partitions": 4})
    app.queue("vectors", value=vectors, options={"partitioner": "round_robin"})

    @app.handler(input="requests", outputs=["vectors"])
    async def embed(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        await asyncio.sleep(0.1)  # the model call
        return [("vectors", msg)]

    return app
# --8<-- [end:app]


async def main(url: str, n: int = 20) -> int:
    """Create the topics, run the embedder, send ``n`` requests; how many vectors came out."""
    tag = uuid.uuid4().hex[:6]
    requests, vectors = f"embed.requests.{tag}", f"embed.vectors.{tag}"
    await create_requests_topic(url, requests)
    await create_requests_topic(url, vectors)
    app = embedder(url, requests, vectors)
    done = 0
    async with app:
        await send_requests(url, n, requests)
        async with Consumer(url, topic=vectors, group=f"check-{tag}",
                            auto_offset_reset="earliest") as out:
            async with asyncio.timeout(60):
                async for _ in out:
                    done += 1
                    if done == n:
                        break
    return done


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "kafka://localhost:9092")))
