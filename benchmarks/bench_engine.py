"""The stream engine's overhead: a pass-through handler vs the bare Consumer->Producer loop.

Same broker, same input topic (pre-filled), same run. The engine does
decode -> handler -> output check -> encode -> publish -> ack after the broker
confirmed the output; the bare loop does decode -> encode -> publish -> ack
on the next message, without waiting for confirmations. The batch rows do the
same 256 messages at a time: ``consumer.batches()`` -> ``send_many()`` against a
batch handler (``batch_size=256, batch_wait=0.02``) whose inputs are acknowledged
once all outputs of their batch are confirmed.

usage: python benchmarks/bench_engine.py [--n 100000] [--runs 3] [--backends memory,redis,kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mlops_async import Admin, App, Consumer, MLOpsMessage, Producer

from _common import broker, save, table, typical_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KAFKA_JOIN = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300,
              "rebalance_timeout_ms": 3000}


async def fill(url: str, topic: str, n: int, kafka: bool) -> None:
    if kafka:
        async with Admin(url) as admin:
            await admin.create_topic(topic, partitions=3)
            await admin.create_topic(topic + ".out", partitions=3)
    async with Producer(url, topic=topic) as p:
        for i in range(n):
            await p.send(typical_message(i))
        await p.flush()


async def bare(url: str, topic: str, n: int, opts: dict[str, Any]) -> float:
    async with Consumer(url, topic=topic, group=f"bare-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="earliest", **opts) as c, Producer(url) as p:
        k = 0
        t0 = 0.0
        async for msg in c:
            if k == 0:
                t0 = time.perf_counter()
            await p.send(msg, topic=topic + ".out")
            k += 1
            if k == n:
                break
        await p.flush()
        return (n - 1) / (time.perf_counter() - t0)


async def engine(url: str, topic: str, n: int, opts: dict[str, Any]) -> float:
    app = App(f"eng-{uuid.uuid4().hex[:6]}", url=url, consumer_options=opts)
    app.queue("in", value=topic)
    app.queue("out", value=topic + ".out")
    k = 0
    t0 = 0.0
    done = asyncio.Event()

    @app.handler(input="in", outputs=["out"])
    async def passthrough(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        nonlocal k, t0
        if k == 0:
            t0 = time.perf_counter()
        k += 1
        if k == n:
            done.set()
        return [("out", msg)]

    async with app:
        await done.wait()
        for p in app._producers.values():
            await p.flush()
        took = time.perf_counter() - t0
    return (n - 1) / took


BATCH, BATCH_WAIT = 256, 0.02


async def bare_batches(url: str, topic: str, n: int, opts: dict[str, Any]) -> float:
    async with Consumer(url, topic=topic, group=f"bareb-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="earliest", **opts) as c, Producer(url) as p:
        k = 0
        t0 = 0.0
        async for batch in c.batches(max_messages=BATCH, max_wait=BATCH_WAIT):
            if k == 0:
                t0 = time.perf_counter()
            await p.send_many(batch, topic=topic + ".out")
            k += len(batch)
            if k >= n:
                break
        await p.flush()
        return (n - 1) / (time.perf_counter() - t0)


async def engine_batches(url: str, topic: str, n: int, opts: dict[str, Any]) -> float:
    app = App(f"engb-{uuid.uuid4().hex[:6]}", url=url, consumer_options=opts)
    app.queue("in", value=topic)
    app.queue("out", value=topic + ".out")
    k = 0
    t0 = 0.0
    done = asyncio.Event()

    @app.handler(input="in", outputs=["out"], batch_size=BATCH, batch_wait=BATCH_WAIT)
    async def passthrough(msgs: list[MLOpsMessage]) -> list[tuple[str, MLOpsMessage]]:
        nonlocal k, t0
        if k == 0:
            t0 = time.perf_counter()
        k += len(msgs)
        if k >= n:
            done.set()
        return [("out", m) for m in msgs]

    async with app:
        await done.wait()
        for p in app._producers.values():
            await p.flush()
        took = time.perf_counter() - t0
    return (n - 1) / took


async def run_backend(name: str, url: str, n: int, runs: int) -> list[dict[str, Any]]:
    opts = KAFKA_JOIN if name == "kafka" else {}
    paths = {
        "bare Consumer->Producer loop": bare, "engine pass-through": engine,
        "bare batches() -> send_many loop": bare_batches,
        "engine batch handler": engine_batches,
    }
    results: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(runs):
        topic = f"eng-{uuid.uuid4().hex[:8]}"
        await fill(url, topic, n, name == "kafka")
        for path, fn in paths.items():  # each reads the whole topic in a group of its own
            results[path].append(await fn(url, topic, n, opts))
    med = {k: statistics.median(v) for k, v in results.items()}
    versus = {"engine pass-through": "bare Consumer->Producer loop",
              "engine batch handler": "bare batches() -> send_many loop"}
    return [{"backend": name, "path": k, "msg_per_s": med[k], "runs": [round(x) for x in v],
             "engine_vs_bare": round(med[k] / med[versus.get(k, k)], 2)}
            for k, v in results.items()]


async def main_async(n: int, runs: int, backends: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in backends:
        if name == "memory":
            rows += await run_backend(name, f"memory://bench-{uuid.uuid4().hex[:6]}", n, runs)
            continue
        with broker(name) as url:
            rows += await run_backend(name, url, n, runs)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backends", default="memory,redis,kafka")
    args = ap.parse_args()
    rows = asyncio.run(main_async(args.n, args.runs, args.backends.split(",")))
    print(table(rows, ["backend", "path", "msg_per_s", "runs", "engine_vs_bare"]))
    print(f"saved {save('engine', rows, {'n': args.n})}")


if __name__ == "__main__":
    main()
