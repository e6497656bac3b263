"""Batch inference: a batch handler against a per-message handler, same scikit-learn model.

The model and handlers are examples/batch_inference's: ``score`` takes up to 256
transactions and makes one ``predict_proba`` call; ``score_one`` makes one call per
transaction (what one writes first). Both are plain functions, run by the engine in
its thread pool. The input topic is filled first; a run is timed from the first
handler call until every score is confirmed by the broker.

usage: python benchmarks/bench_batch_inference.py [--n 20000] [--runs 3] [--backends memory,redis]
requires: scikit-learn (pip install -e '.[examples]')
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_async import App, Producer

from _common import broker, save, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.batch_inference.model import make_data, model
from examples.batch_inference.scoring import Transaction, score, score_one

BATCH, BATCH_WAIT = 256, 0.01


async def fill(url: str, topic: str, n: int) -> None:
    x, _ = make_data(n, seed=1)
    async with Producer(url, topic=topic, schema=Transaction) as p:
        await p.send_many([Transaction(i, row.tolist()) for i, row in enumerate(x)])
        await p.flush()


async def measure(url: str, topic: str, n: int, batch: bool) -> float:
    app = App(f"bench-{uuid.uuid4().hex[:6]}", url=url, heartbeat=None)
    app.queue("transactions", value=topic,
              schema="examples.batch_inference.scoring:Transaction")
    app.queue("scores", value=f"{topic}.scores")
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    lock = threading.Lock()
    seen = [0]
    started = [0.0]

    def counted(fn: Callable[[Any], Any], size: Callable[[Any], int]) -> Callable[[Any], Any]:
        def run(arg: Any) -> Any:
            with lock:
                if seen[0] == 0:
                    started[0] = time.perf_counter()
            out = fn(arg)
            with lock:
                seen[0] += size(arg)
                if seen[0] >= n:
                    loop.call_soon_threadsafe(done.set)
            return out
        return run

    if batch:
        def batched(ts: list[Transaction]) -> Any:
            return score(ts)

        app.handler(input="transactions", outputs=["scores"], batch_size=BATCH,
                    batch_wait=BATCH_WAIT)(counted(batched, len))
    else:
        def one(t: Transaction) -> Any:
            return score_one(t)

        app.handler(input="transactions", outputs=["scores"])(counted(one, lambda _: 1))
    async with app:
        async with asyncio.timeout(600):  # a broken run fails instead of hanging
            await done.wait()
        for p in app._producers.values():  # every score confirmed by the broker
            await p.flush()
        took = time.perf_counter() - started[0]
    return n / took


async def run_backend(name: str, url: str, n: int, runs: int) -> list[dict[str, Any]]:
    paths = {"per-message handler": False, f"batch handler ({BATCH})": True}
    results: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(runs):
        topic = f"scoring-{uuid.uuid4().hex[:8]}"
        await fill(url, topic, n)
        for path, batch in paths.items():  # each reads the whole topic in a group of its own
            results[path].append(await measure(url, topic, n, batch))
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med["per-message handler"]
    return [{"backend": name, "path": k, "msg_per_s": med[k], "runs": [round(x) for x in v],
             "speedup": round(med[k] / base, 1)} for k, v in results.items()]


async def main_async(n: int, runs: int, backends: list[str]) -> list[dict[str, Any]]:
    model()  # trained before any timing
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
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backends", default="memory,redis")
    args = ap.parse_args()
    rows = asyncio.run(main_async(args.n, args.runs, args.backends.split(",")))
    print(table(rows, ["backend", "path", "msg_per_s", "runs", "speedup"]))
    print(f"saved {save('batch_inference', rows, {'n': args.n, 'batch_size': BATCH})}")


if __name__ == "__main__":
    main()
