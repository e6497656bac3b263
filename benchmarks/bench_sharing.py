"""Work sharing: members of one group x a slow handler x backend, makespan against the ideal.

Every member handles each message with ``await asyncio.sleep(slow)``. The members
join first, then ``per_member * members`` messages are sent at once; the makespan
runs from the send to the last message handled. The ideal is ``n * slow / members``:
``x_ideal`` is makespan over ideal (1.0: the work was shared perfectly; a member
that held messages another could have run shows as more). A consumer member is
``async for msg in consumer``; an engine member is one ``App`` replica with
``max_concurrency=1``.

Cases are named ``[engine-]<broker>``; a new broker (Kafka, with partitions and a
partitioner) is one more entry in ``CASES``.

usage: python benchmarks/bench_sharing.py [--slow 0.2] [--per-member 24] [--members 1,2,4]
           [--backends memory,redis,postgresql,engine-memory,engine-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_async import App, Consumer, MLOpsMessage, Producer

from _common import broker, save, table, typical_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Case:
    """One row family: which broker, consumers or engine replicas, and their options."""

    broker: str  # memory, redis, postgresql (what _common.broker starts), kafka...
    engine: bool = False
    consumer_options: dict[str, Any] = field(default_factory=dict)
    producer_options: dict[str, Any] = field(default_factory=dict)
    # Runs once per row before the members join (a Kafka case creates its partitions).
    prepare: Callable[[str, str, int], Awaitable[None]] | None = None


CASES: dict[str, Case] = {
    "memory": Case("memory"),
    "redis": Case("redis"),
    "postgresql": Case("postgresql"),
    "engine-memory": Case("memory", engine=True),
    "engine-redis": Case("redis", engine=True),
    "engine-postgresql": Case("postgresql", engine=True),
}


@contextlib.contextmanager
def url_for(kind: str) -> Iterator[str]:
    if kind == "memory":
        yield f"memory://sharing-{uuid.uuid4().hex[:6]}"
        return
    with broker(kind) as url:
        yield url


class Tally:
    """What each member handled; ``done`` is set once all ``n`` were."""

    def __init__(self, members: int, n: int) -> None:
        self.counts = [0] * members
        self.n = n
        self.done = asyncio.Event()

    def handled(self, member: int) -> None:
        self.counts[member] += 1
        if sum(self.counts) >= self.n:
            self.done.set()


async def consumer_member(url: str, topic: str, group: str, slow: float, tally: Tally,
                          i: int, options: dict[str, Any]) -> None:
    async with Consumer(url, topic=topic, group=group, auto_offset_reset="earliest",
                        **options) as c:
        async for _ in c:
            await asyncio.sleep(slow)
            tally.handled(i)


def engine_member(url: str, topic: str, group: str, slow: float, tally: Tally, i: int,
                  options: dict[str, Any]) -> App:
    app = App(f"share-{uuid.uuid4().hex[:6]}", url=url, group=group, max_concurrency=1,
              heartbeat=None, consumer_options=options or None)
    app.queue("in", value=topic)

    @app.handler(input="in")
    async def work(msg: MLOpsMessage) -> None:
        await asyncio.sleep(slow)
        tally.handled(i)

    return app


async def one_row(name: str, case: Case, url: str, members: int, slow: float,
                  per_member: int) -> dict[str, Any]:
    n = per_member * members
    topic, group = f"share-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    if case.prepare is not None:
        await case.prepare(url, topic, members)
    tally = Tally(members, n)
    apps: list[App] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        if case.engine:
            apps = [engine_member(url, topic, group, slow, tally, i, case.consumer_options)
                    for i in range(members)]
            for app in apps:
                await app.start()
        else:
            tasks = [asyncio.create_task(consumer_member(
                url, topic, group, slow, tally, i, case.consumer_options))
                for i in range(members)]
        await asyncio.sleep(1.0)  # every member joined and waits in its first fetch
        msgs = [typical_message(i) for i in range(n)]
        t0 = time.perf_counter()
        async with Producer(url, topic=topic, **case.producer_options) as p:
            await p.send_many(msgs, flush=True)
        async with asyncio.timeout(n * slow * 3 + 60):
            await tally.done.wait()
        makespan = time.perf_counter() - t0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for app in apps:
            await app.stop()
    ideal = n * slow / members
    counts = tally.counts
    return {"group": name, "case": f"{members} member(s)", "members": members, "n": n,
            "makespan_s": round(makespan, 2), "ideal_s": round(ideal, 2),
            "x_ideal": round(makespan / ideal, 2), "counts": counts}


async def main_async(names: list[str], members: list[int], slow: float,
                     per_member: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_broker: dict[str, list[str]] = {}
    for name in names:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}")
        by_broker.setdefault(CASES[name].broker, []).append(name)
    for kind, group in by_broker.items():  # one broker server per kind
        with url_for(kind) as url:
            for name in group:
                for m in members:
                    row = await one_row(name, CASES[name], url, m, slow, per_member)
                    print(f"{name:20s} {row['case']:12s} makespan {row['makespan_s']:6.2f} s"
                          f"  ideal {row['ideal_s']:5.2f} s  x{row['x_ideal']:.2f}"
                          f"  counts {row['counts']}", flush=True)
                    rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slow", type=float, default=0.2, help="seconds per message")
    ap.add_argument("--per-member", type=int, default=24, help="messages per member")
    ap.add_argument("--members", default="1,2,4")
    ap.add_argument("--backends", default=",".join(
        ["memory", "redis", "postgresql", "engine-memory", "engine-redis"]))
    args = ap.parse_args()
    members = [int(m) for m in args.members.split(",")]
    rows = asyncio.run(main_async(args.backends.split(","), members, args.slow,
                                  args.per_member))
    shown = [{**r, "makespan_s": f"{r['makespan_s']:.2f}", "x_ideal": f"{r['x_ideal']:.2f}"}
             for r in rows]
    print(table(shown, ["group", "case", "n", "makespan_s", "ideal_s", "x_ideal", "counts"]))
    print(f"saved {save('sharing', rows, {'slow_s': args.slow, 'per_member': args.per_member})}")


if __name__ == "__main__":
    main()
