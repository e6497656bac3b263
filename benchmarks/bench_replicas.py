"""Throughput of a CPU-bound pipeline stage with 1, 2 and 4 replica processes on Kafka.

Each message costs about --spin loop iterations of pure Python. The input topic
has 4 partitions and is filled first; the rate is measured from the first output
to the last, so group joins do not count.

usage: python benchmarks/bench_replicas.py [--n 4000] [--spin 20000] [--replicas 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mlops_async import Admin, Consumer, Producer

from _common import broker, save, table, typical_message

ROOT = Path(__file__).resolve().parents[1]


async def measure(url: str, replicas: int, n: int, spin: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    t_in, t_out = f"rin-{tag}", f"rout-{tag}"
    async with Admin(url) as admin:
        await admin.create_topic(t_in, partitions=4)
        await admin.create_topic(t_out, partitions=4)
    async with Producer(url, topic=t_in) as p:
        for i in range(n):
            msg = typical_message(i)
            await p.send(msg, key=str(i))
        await p.flush()
    env = {**os.environ, "PIPE_URL": url, "PIPE_IN": t_in, "PIPE_OUT": t_out}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_async", "run", "tests.pipeline_app:pipeline", "--stage",
         "work", "--replicas", str(replicas), "--param", f"spin={spin}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stamps: list[float] = []
    try:
        async with Consumer(url, topic=t_out, group=f"m-{tag}", auto_offset_reset="earliest",
                            session_timeout_ms=3000, heartbeat_interval_ms=300) as c:
            deadline = time.monotonic() + 600
            while len(stamps) < n and time.monotonic() < deadline:
                # created_at of an output is when a replica built it: processing time.
                stamps += [m.created_at for m in await c.get_messages(timeout=1.0)]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
    stamps.sort()
    # From the 10th percentile on: group joins and the first rebalance are not throughput.
    start = stamps[len(stamps) // 10]
    took = stamps[-1] - start
    counted = len(stamps) - len(stamps) // 10
    return {"replicas": replicas, "messages": len(stamps), "seconds": round(took, 2),
            "msg_per_s": counted / took}


async def main_async(n: int, spin: int, counts: list[int]) -> list[dict[str, Any]]:
    with broker("kafka") as url:
        rows = [await measure(url, r, n, spin) for r in counts]
    base = rows[0]["msg_per_s"]
    for r in rows:
        r["speedup"] = round(r["msg_per_s"] / base, 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--spin", type=int, default=20000)
    ap.add_argument("--replicas", default="1,2,4")
    args = ap.parse_args()
    counts = [int(x) for x in args.replicas.split(",")]
    rows = asyncio.run(main_async(args.n, args.spin, counts))
    print(f"CPU-bound stage (~{args.spin} loop iterations per message), {os.cpu_count()} cores")
    print(table(rows, ["replicas", "messages", "seconds", "msg_per_s", "speedup"]))
    print(f"saved {save('replicas', rows, {'n': args.n, 'spin': args.spin})}")


if __name__ == "__main__":
    main()
