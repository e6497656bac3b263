"""Slow work shared over Kafka partitions: makespan against the ideal, per partitioner.

Members 1, 2 and 4 of one consumer group read a 4-partition topic; each takes
--slow seconds per message (``await asyncio.sleep``: a model call, a training
step). Once every partition is assigned, --n keyless records are sent in one
burst; the makespan runs from the first send to the last message handled.
The ideal is ceil(n / members) * slow: every member busy all the time.

With the default partitioner a burst lands on one partition (one member does
it all); with ``partitioner="round_robin"`` it is spread record by record, so
each member gets its share. Both Kafka backends, our own Tansu broker.

``--produce N`` measures instead what round-robin costs a fast producer: N
typical messages sent one ``await send()`` at a time to a 4-partition topic,
default partitioner against round_robin, both backends (msg/s, median of rounds).

usage: python benchmarks/bench_sharing_kafka.py [--n 16] [--slow 0.2] [--members 1,2,4]
       [--rounds 3] [--url kafka://host:9092] [--produce 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
import uuid
from typing import Any

from mlops_async import Admin, Consumer, MLOpsMessage, Producer

from _common import broker, save, table, typical_message

PARTITIONS = 4
# Short sessions, as in the tests: a group of new members settles in a few seconds.
OPTIONS = {
    "kafka": {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300,
              "rebalance_timeout_ms": 3000},
    "kafka+confluent": {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300},
}


def assigned(consumer: Consumer[Any]) -> int:
    """Partitions the group gave this member (each backend's client keeps them)."""
    sub: Any = consumer._sub
    if sub is None:
        return 0
    if hasattr(sub, "_assigned"):  # kafka+confluent://
        return len(sub._assigned)
    return len(sub.consumer.assignment())  # kafka://


async def once(url: str, scheme: str, members: int, partitioner: str, n: int,
               slow: float) -> tuple[float, list[int]]:
    """One round: the makespan and how many messages each member handled."""
    topic, group = f"sh-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=PARTITIONS)
    consumers: list[Consumer[MLOpsMessage]] = [
        Consumer(url, topic=topic, group=group, auto_offset_reset="earliest",
                 **OPTIONS[scheme]) for _ in range(members)]
    handled = [0] * members
    done = asyncio.Event()
    last = 0.0

    async def member(k: int) -> None:
        nonlocal last
        async for _ in consumers[k]:
            await asyncio.sleep(slow)
            handled[k] += 1
            if sum(handled) >= n:
                last = time.perf_counter()
                done.set()

    for c in consumers:
        await c.start()
    tasks = [asyncio.create_task(member(k)) for k in range(members)]
    try:
        for _ in range(1200):  # every member joined and has its partitions (60 s at most)
            if all(assigned(c) for c in consumers) and sum(map(assigned, consumers)) == PARTITIONS:
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("the group did not settle within 60 s")
        options = {} if partitioner == "default" else {"partitioner": partitioner}
        async with Producer(url, topic=topic, **options) as p:
            first = time.perf_counter()
            await p.send_many([typical_message(i) for i in range(n)], flush=True)
            async with asyncio.timeout(n * slow + 60):
                await done.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in consumers:
            await c.close()
    return last - first, handled


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with broker("kafka", args.url) as kafka_url:
        address = kafka_url.split("://", 1)[1]
        for scheme in ("kafka", "kafka+confluent"):
            url = f"{scheme}://{address}"
            for members in [int(m) for m in args.members.split(",")]:
                ideal = math.ceil(args.n / members) * args.slow
                for partitioner in ("default", "round_robin"):
                    spans, splits = [], []
                    for _ in range(args.rounds):
                        span, split = await once(url, scheme, members, partitioner, args.n,
                                                 args.slow)
                        spans.append(span)
                        splits.append(split)
                    makespan = statistics.median(spans)
                    rows.append({
                        "group": f"{scheme}://", "case": f"{members} member(s), {partitioner}",
                        "backend": scheme, "members": members, "partitioner": partitioner,
                        "makespan_s": round(makespan, 3), "ideal_s": round(ideal, 3),
                        "x_ideal": round(makespan / ideal, 2),
                        "rounds_s": [round(s, 3) for s in spans],
                        "split": sorted(splits[spans.index(makespan)], reverse=True),
                    })
                    print(f"{scheme:16} {members} member(s) {partitioner:11} "
                          f"makespan {makespan:.2f} s (ideal {ideal:.2f} s, "
                          f"{makespan / ideal:.2f}x), split {rows[-1]['split']}")
    return rows


async def produce_rate(url: str, partitioner: str, n: int) -> float:
    topic = f"shp-{uuid.uuid4().hex[:8]}"
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=PARTITIONS)
    msgs = [typical_message(i) for i in range(n)]
    options = {} if partitioner == "default" else {"partitioner": partitioner}
    async with Producer(url, topic=topic, **options) as p:
        await p.send(msgs[0], flush=True)  # connected, topic metadata known
        start = time.perf_counter()
        for m in msgs:
            await p.send(m)
        await p.flush()
        return n / (time.perf_counter() - start)


async def produce_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with broker("kafka", args.url) as kafka_url:
        address = kafka_url.split("://", 1)[1]
        for scheme in ("kafka", "kafka+confluent"):
            url = f"{scheme}://{address}"
            rates: dict[str, list[float]] = {"default": [], "round_robin": []}
            for _ in range(args.rounds):  # interleaved: noise hits both alike
                for partitioner in rates:
                    rates[partitioner].append(await produce_rate(url, partitioner, args.produce))
            base = statistics.median(rates["default"])
            for partitioner, values in rates.items():
                rate = statistics.median(values)
                rows.append({"group": f"{scheme}://", "case": partitioner, "backend": scheme,
                             "partitioner": partitioner, "msg_per_s": round(rate),
                             "rounds_msg_per_s": [round(v) for v in values],
                             "x_default": round(rate / base, 2)})
                print(f"{scheme:16} {partitioner:11} {rate:,.0f} msg/s ({rate / base:.2f}x)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="messages per round")
    ap.add_argument("--slow", type=float, default=0.2, help="seconds per message")
    ap.add_argument("--members", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per case (median kept)")
    ap.add_argument("--url", default=None, help="a Kafka broker (default: our own Tansu)")
    ap.add_argument("--produce", type=int, default=0,
                    help="measure producer msg/s with N messages instead")
    args = ap.parse_args()
    if args.produce:
        rows = asyncio.run(produce_async(args))
        print(table(rows, ["backend", "partitioner", "msg_per_s", "x_default"]))
        extra = {"n": args.produce, "runs": args.rounds, "partitions": PARTITIONS}
        print(f"saved {save('sharing_kafka_produce', rows, extra)}")
        return
    rows = asyncio.run(main_async(args))
    print(f"\n{args.n} keyless messages, {args.slow:g} s each, {PARTITIONS} partitions, "
          f"median of {args.rounds} rounds")
    print(table(rows, ["backend", "members", "partitioner", "makespan_s", "ideal_s",
                       "x_ideal", "split"]))
    extra = {"n": args.n, "slow_s": args.slow, "runs": args.rounds, "partitions": PARTITIONS}
    print(f"saved {save('sharing_kafka', rows, extra)}")


if __name__ == "__main__":
    main()
