"""Redis Streams: the library next to plain redis-py, same server, same messages, same run.

Starts its own redis-server on a free port unless --url is given.

usage: python benchmarks/bench_redis.py [--n 200000] [--runs 3] [--url redis://...]
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
from redis.asyncio import Redis

from mlops_async import Codec, Consumer, MLOpsMessage, Producer

from _common import broker, print_ratios, save, table, typical_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PREFIX = "mlops:"


def topic_name() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


async def lib_send(url: str, msgs: list[MLOpsMessage], many: bool) -> tuple[float, str]:
    topic = topic_name()
    async with Producer(url, topic=topic) as p:
        t0 = time.perf_counter()
        if many:
            await p.send_many(msgs, flush=True)
        else:
            for m in msgs:
                await p.send(m)
            await p.flush()
        return len(msgs) / (time.perf_counter() - t0), topic


async def raw_send(url: str, msgs: list[MLOpsMessage]) -> tuple[float, str]:
    """What a user would write: encode, pipeline XADD in batches of 1000."""
    topic = topic_name()
    key = PREFIX + topic
    codec: Codec[MLOpsMessage] = Codec()  # same envelope, so the library can read it
    r = Redis.from_url(url)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(msgs), 1000):
            pipe = r.pipeline(transaction=False)
            for m in msgs[start : start + 1000]:
                pipe.xadd(key, {"v": codec.encode(m)}, maxlen=1_000_000, approximate=True)
            await pipe.execute()
        return len(msgs) / (time.perf_counter() - t0), topic
    finally:
        await r.aclose()


async def lib_consume(url: str, topic: str, n: int) -> float:
    async with Consumer(url, topic=topic, group="lib", auto_offset_reset="earliest") as c:
        k = 0
        t0 = time.perf_counter()
        async for _ in c:
            k += 1
            if k == n:
                break
        return n / (time.perf_counter() - t0)


async def raw_consume(url: str, topic: str, n: int) -> float:
    key = PREFIX + topic
    dec = msgspec.msgpack.Decoder(MLOpsMessage)
    r = Redis.from_url(url)
    try:
        await r.xgroup_create(key, "raw", id="0", mkstream=True)
        k = 0
        t0 = time.perf_counter()
        while k < n:
            reply = await r.xreadgroup("raw", "c1", {key: ">"}, count=1000, block=1000)
            for _, entries in reply:
                ids = []
                for eid, fields in entries:
                    dec.decode(fields[b"v"][1:])
                    ids.append(eid)
                k += len(ids)
                await r.xack(key, "raw", *ids)
        return n / (time.perf_counter() - t0)
    finally:
        await r.aclose()


async def run(url: str, n: int, runs: int) -> dict[str, Any]:
    msgs = [typical_message(i) for i in range(n)]
    results: dict[str, list[float]] = {}
    for _ in range(runs):
        rate, lib_topic = await lib_send(url, msgs, many=False)
        results.setdefault("produce: library send() per message", []).append(rate)
        rate, _ = await lib_send(url, msgs, many=True)
        results.setdefault("produce: library send_many()", []).append(rate)
        rate, raw_topic = await raw_send(url, msgs)
        results.setdefault("produce: redis-py pipelined XADD x1000 + encode", []).append(rate)
        results.setdefault("consume: library async for (+XACK)", []).append(
            await lib_consume(url, lib_topic, n))
        results.setdefault("consume: redis-py XREADGROUP x1000 + decode + XACK", []).append(
            await raw_consume(url, raw_topic, n))
        r = Redis.from_url(url)
        await r.flushdb()
        await r.aclose()
    rows = [{"path": k, "msg_per_s": statistics.median(v), "runs": [round(x) for x in v]}
            for k, v in results.items()]
    med = {r["path"]: r["msg_per_s"] for r in rows}
    ratios = {
        "send_vs_raw_pipeline": med["produce: library send() per message"]
        / med["produce: redis-py pipelined XADD x1000 + encode"],
        "async_for_vs_raw_xreadgroup": med["consume: library async for (+XACK)"]
        / med["consume: redis-py XREADGROUP x1000 + decode + XACK"],
    }
    return {"rows": rows, "ratios": ratios, "payload_bytes": len(Codec().encode(msgs[0]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--url", default=None)
    args = ap.parse_args()
    with broker("redis", args.url) as url:
        out = asyncio.run(run(url, args.n, args.runs))
    print(f"{args.n:,} messages of {out['payload_bytes']} B, redis-server on loopback")
    print(table(out["rows"], ["path", "msg_per_s", "runs"]))
    print_ratios(out["ratios"])
    print(f"saved {save('redis', out.pop('rows'), {'n': args.n, **out})}")


if __name__ == "__main__":
    main()
