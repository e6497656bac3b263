"""A long-lived asyncio worker: consume training requests, publish results.

Run several copies with the same --group on Kafka or Redis and they share the
work; stop one with Ctrl-C and its unfinished messages go to the others.

    python examples/asyncio_worker.py --url kafka://localhost:9092 --group trainers
    python examples/asyncio_worker.py --url memory:// --demo   # self-contained
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random

from mlops_async import Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer, Stage


async def train(msg: MLOpsMessage) -> dict[str, float]:
    """Stand-in for real work; a CPU-heavy step would go to a thread or process pool."""
    await asyncio.sleep(0.01)
    return {"loss": round(random.uniform(0.1, 0.5), 4)}


async def worker(url: str, group: str, limit: int | None) -> None:
    async with (
        Consumer(url, topic="train.requests", group=group, auto_offset_reset="earliest") as inbox,
        Producer(url, topic="train.results") as outbox,
    ):
        done = 0
        async for msg in inbox:  # acknowledged only after this body finished
            metrics = await train(msg)
            await outbox.send(
                msg.to_builder()
                .with_msg_type(MessageType.COMPLETE)
                .with_creator_type(Stage.TRAIN)
                .with_creator(f"worker-{group}")
                .with_additional_arguments({**msg.additional_arguments, **metrics})
                .build()
            )
            done += 1
            logging.info("trained %s: %s", msg.correlation_id, metrics)
            if limit is not None and done >= limit:
                return


async def submit(url: str, n: int) -> None:
    async with Producer(url, topic="train.requests") as p:
        for i in range(n):
            await p.send(
                MessageBuilder().with_msg_type(MessageType.START).with_creator_type(Stage.ETL)
                .with_correlation_id(f"job-{i}").with_argument("epochs", 3).build()
            )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="memory://example")
    ap.add_argument("--group", default="trainers")
    ap.add_argument("--demo", action="store_true", help="submit 20 jobs, process them, exit")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.demo:
        await submit(args.url, 20)
        await worker(args.url, args.group, limit=20)
    else:
        await worker(args.url, args.group, limit=None)


if __name__ == "__main__":
    asyncio.run(main())
