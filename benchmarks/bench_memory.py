"""End-to-end throughput on the in-memory bus, against its own ceilings, same run.

Rows: the library (one task `await producer.send(msg)` per message, one
`async for` consumer; encode, batch, decode and acknowledge included), the
same with OpenTelemetry tracing on (an SDK TracerProvider, every span sampled and
dropped at the end: the cost of making spans and carrying the context, not of
exporting them; needs the otel extra), the codec round trip alone, and a bare
asyncio.Queue(1000) moving the same objects between two tasks. Then peak RSS
while a producer outruns a slow consumer for --flat-n messages: it must stay flat (bounded buffers).

A second row moves the same messages in batches: ``send_many`` of 1000 and
``consumer.batches(max_messages=1000)``.

usage: python benchmarks/bench_memory.py [--n 300000] [--runs 3] [--flat-n 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import uuid

from mlops_async import Codec, Consumer, MLOpsMessage, Producer, tracing

from _common import median_of, rss_mib, save, table, typical_message


async def library(msgs: list[MLOpsMessage]) -> float:
    """Tracing off: no TracerProvider is configured in this process."""
    url = f"memory://bench-{uuid.uuid4().hex[:6]}"
    n = len(msgs)
    async with Consumer(url, topic="t", group="g") as c, Producer(url, topic="t") as p:
        async def consume() -> None:
            k = 0
            async for _ in c:
                k += 1
                if k == n:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for m in msgs:
            await p.send(m)
        await task
        took = time.perf_counter() - t0
    return n / took


async def library_batches(msgs: list[MLOpsMessage], size: int = 1000) -> float:
    """``send_many`` of ``size`` messages -> memory bus -> ``batches(max_messages=size)``."""
    url = f"memory://bench-{uuid.uuid4().hex[:6]}"
    n = len(msgs)
    async with Consumer(url, topic="t", group="g") as c, Producer(url, topic="t") as p:
        async def consume() -> None:
            k = 0
            async for batch in c.batches(max_messages=size, max_wait=0.01):
                k += len(batch)
                if k >= n:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for i in range(0, n, size):
            await p.send_many(msgs[i:i + size])
        await task
        took = time.perf_counter() - t0
    return n / took


def traced_library(msgs: list[MLOpsMessage]) -> float | None:
    """``library`` with tracing on; None without the otel extra."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    tracing.use(TracerProvider())  # this library only: the global provider stays unset
    try:
        return asyncio.run(library(msgs))
    finally:
        tracing.use(None)


def codec_round_trip(msgs: list[MLOpsMessage]) -> float:
    codec: Codec[MLOpsMessage] = Codec()
    t0 = time.perf_counter()
    for m in msgs:
        codec.decode(codec.encode(m), topic="t")
    return len(msgs) / (time.perf_counter() - t0)


def codec_round_trip_batches(msgs: list[MLOpsMessage], size: int = 1000) -> float:
    """The round trip 1000 at a time, each batch's decoded messages held in a list until
    the next (what batches() hands out): the floor a batch consumer shares."""
    codec: Codec[MLOpsMessage] = Codec()
    encode, decode = codec.encode, codec.decode
    held: list[MLOpsMessage] = []
    t0 = time.perf_counter()
    for i in range(0, len(msgs), size):
        values = [encode(m) for m in msgs[i:i + size]]
        held[:] = [decode(v, topic="t") for v in values]
    return len(msgs) / (time.perf_counter() - t0)


async def bare_queue(msgs: list[MLOpsMessage]) -> float:
    q: asyncio.Queue[MLOpsMessage] = asyncio.Queue(1000)
    n = len(msgs)

    async def consume() -> None:
        for _ in range(n):
            await q.get()

    task = asyncio.create_task(consume())
    t0 = time.perf_counter()
    for m in msgs:
        await q.put(m)
    await task
    return n / (time.perf_counter() - t0)


async def flat_memory(n: int) -> dict[str, object]:
    """A producer that outruns a slow consumer: RSS sampled as it goes."""
    url = f"memory://flat-{uuid.uuid4().hex[:6]}"
    template = typical_message(0)
    samples: list[float] = []
    base = rss_mib()
    async with Consumer(url, topic="t", group="g") as c, Producer(url, topic="t") as p:
        async def slow_consumer() -> None:
            k = 0
            async for _ in c:
                k += 1
                if k % 64 == 0:
                    await asyncio.sleep(0)  # yields more often than the producer: slower
                if k == n:
                    return

        task = asyncio.create_task(slow_consumer())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for i in range(n):
            await p.send(template)
            if i % (n // 10) == 0:
                samples.append(round(rss_mib() - base, 1))
        await task
        took = time.perf_counter() - t0
    return {"messages": n, "seconds": round(took, 2), "rss_growth_mib_samples": samples,
            "peak_rss_growth_mib": max(samples)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flat-n", type=int, default=1_000_000)
    args = ap.parse_args()
    msgs = [typical_message(i) for i in range(args.n)]
    # The input messages are the benchmark's, not the paths': frozen out of the cyclic
    # GC, so no path pays for traversing them (a batch that outlives a collection did).
    gc.freeze()
    lib, lib_runs = median_of(args.runs, lambda: asyncio.run(library(msgs)))
    batched, batched_runs = median_of(args.runs, lambda: asyncio.run(library_batches(msgs)))
    traced_runs = [traced_library(msgs) for _ in range(args.runs)]
    rt, rt_runs = median_of(args.runs, lambda: codec_round_trip(msgs))
    rtb, rtb_runs = median_of(args.runs, lambda: codec_round_trip_batches(msgs))
    q, q_runs = median_of(args.runs, lambda: asyncio.run(bare_queue(msgs)))
    rows = [
        {"path": "library: send -> memory bus -> async for", "msg_per_s": lib, "runs": lib_runs},
        {"path": "library: send_many(1000) -> memory bus -> batches(1000)",
         "msg_per_s": batched, "runs": batched_runs},
        {"path": "codec round trip alone", "msg_per_s": rt, "runs": rt_runs},
        {"path": "codec round trip, 1000 at a time, each batch held",
         "msg_per_s": rtb, "runs": rtb_runs},
        {"path": "asyncio.Queue(1000), no codec", "msg_per_s": q, "runs": q_runs},
    ]
    if None not in traced_runs:
        runs = [float(r) for r in traced_runs if r is not None]
        rows.insert(1, {"path": "library, OpenTelemetry tracing on (spans not exported)",
                        "msg_per_s": sorted(runs)[len(runs) // 2], "runs": runs})
    for r in rows:
        r["x_codec_round_trip"] = round(float(r["msg_per_s"]) / rt, 2)  # type: ignore[arg-type]
    print(table(rows, ["path", "msg_per_s", "x_codec_round_trip"]))
    flat = asyncio.run(flat_memory(args.flat_n))
    print(f"producer outrunning a slow consumer, {flat['messages']:,} messages in "
          f"{flat['seconds']}s: RSS growth samples (MiB) {flat['rss_growth_mib_samples']}, "
          f"peak {flat['peak_rss_growth_mib']} MiB")
    print(f"saved {save('memory', rows, {'n': args.n, 'flat_memory': flat})}")


if __name__ == "__main__":
    main()
