"""What users call, against its raw floor: the builder, task status reporting.

Each row is timed in thread CPU time (``time.thread_time_ns``), best of ``--runs``
interleaved rounds in one process, so a noisy machine moves both sides of a
ratio alike:

- ``builder``: ``MessageBuilder().with_msg_type(...)...with_additional_arguments({...})
  .build()`` (the FastAPI example's START message) against ``MLOpsMessage(...)``
  constructed directly with the same fields, a fresh id and time (the floor).
- ``status report``: one report of ``async with producer.task(...)`` (START, three
  ``progress()``, COMPLETE, which waits for the broker's confirmation) against one
  bare ``await producer.send(prebuilt)`` (the floor), on the in-memory bus.

usage: python benchmarks/bench_api.py [--n 20000] [--runs 7] [--profile builder|status]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from mlops_async import MessageBuilder, MessageType, MLOpsMessage, Producer, Stage
from mlops_async.message import new_id

from _common import save, table, typical_message

TARGETS = {"builder": 1.5, "status report": 2.5}


def args_of(i: int) -> dict[str, Any]:
    return {"dataset": f"ds-{i % 100}", "epochs": 3, "fail": False}


def built(n: int) -> int:
    """The FastAPI example's START message, through the builder."""
    t0 = time.thread_time_ns()
    for i in range(n):
        (MessageBuilder().with_msg_type(MessageType.START).with_creator_type("jobs-api")
         .with_correlation_id("job-0001").with_next_task(Stage.TRAIN)
         .with_additional_arguments(args_of(i)).build())
    return time.thread_time_ns() - t0


def direct(n: int) -> int:
    """The same message constructed directly: the builder's floor."""
    now = time.time
    t0 = time.thread_time_ns()
    for i in range(n):
        MLOpsMessage(id=new_id(), created_at=now(), msg_type=MessageType.START,
                     creator_type="jobs-api", correlation_id="job-0001", next_task="TRAIN",
                     additional_arguments=args_of(i))
    return time.thread_time_ns() - t0


def loop_only(n: int) -> int:
    """The loop and the arguments dict alone, for the record (both rows pay it)."""
    t0 = time.thread_time_ns()
    for i in range(n):
        args_of(i)
    return time.thread_time_ns() - t0


async def bare_sends(producer: Producer[Any], msgs: list[MLOpsMessage]) -> int:
    t0 = time.thread_time_ns()
    for m in msgs:
        await producer.send(m)
    await producer.flush()
    return time.thread_time_ns() - t0


async def status_jobs(producer: Producer[Any], jobs: int) -> int:
    """``jobs`` jobs of five reports each: START, 3x PROGRESS, COMPLETE (confirmed)."""
    t0 = time.thread_time_ns()
    for j in range(jobs):
        async with producer.task(f"job-{j}", topic="bench.status", creator="jobs-api",
                                 stage=Stage.TRAIN) as task:
            for epoch in (1, 2, 3):
                await task.progress(percent=round(100 * epoch / 3), epoch=epoch)
            task.result(accuracy=0.93, dataset="ds")
    return time.thread_time_ns() - t0


async def progress_reports(producer: Producer[Any], n: int) -> int:
    """``n`` PROGRESS reports of one task (no final confirmation in the timing)."""
    task = producer.task("job-p", topic="bench.status", creator="jobs-api", stage=Stage.TRAIN)
    t0 = time.thread_time_ns()
    for i in range(n):
        await task.progress(percent=i % 100, epoch=i)
    await producer.flush()
    return time.thread_time_ns() - t0


async def confirmations(producer: Producer[Any], n: int) -> int:
    """``n`` rounds of one send and a flush: what COMPLETE's confirmation costs a job."""
    msg = typical_message(0)
    t0 = time.thread_time_ns()
    for _ in range(n):
        await producer.send(msg)
        await producer.flush()
    return time.thread_time_ns() - t0


async def measure_status(n: int, runs: int) -> dict[str, float]:
    """Best ns per bare send, per status report and its parts, interleaved rounds."""
    url = f"memory://bench-api-{new_id()[:8]}"
    msgs = [typical_message(i) for i in range(n)]
    jobs = max(1, n // 5)
    best: dict[str, float] = {}

    def keep(name: str, ns: float) -> None:
        best[name] = min(best.get(name, ns), ns)

    async with Producer(url, topic="bench.send") as producer:
        await bare_sends(producer, msgs[:1000])  # warm up every path
        await status_jobs(producer, 200)
        for _ in range(runs):
            keep("send", await bare_sends(producer, msgs) / n)
            keep("report", await status_jobs(producer, jobs) / (5 * jobs))
            keep("progress", await progress_reports(producer, n) / n)
            keep("confirm", await confirmations(producer, jobs) / jobs)
    return best


def measure_builder(n: int, runs: int) -> tuple[float, float, float]:
    b, d, floor = [], [], []
    built(1000), direct(1000)
    for _ in range(runs):
        b.append(built(n) / n)
        d.append(direct(n) / n)
        floor.append(loop_only(n) / n)
    return min(b), min(d), min(floor)


def profile(what: str, n: int) -> None:
    prof = cProfile.Profile()
    if what == "builder":
        prof.runcall(built, n)
    else:
        async def run() -> None:
            async with Producer(f"memory://bench-api-{new_id()[:8]}") as producer:
                prof.enable()
                await status_jobs(producer, n // 5)
                prof.disable()
        asyncio.run(run())
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--profile", choices=["builder", "status"])
    args = ap.parse_args()
    if args.profile:
        profile(args.profile, args.n)
        return
    builder_ns, direct_ns, loop_ns = measure_builder(args.n, args.runs)
    status = asyncio.run(measure_status(args.n, args.runs))
    send_ns, report_ns = status["send"], status["report"]
    rows: list[dict[str, Any]] = [
        {"call": "builder chain + build()", "ns": builder_ns,
         "floor": "MLOpsMessage(...) direct", "floor_ns": direct_ns},
        {"call": "one status report (producer.task)", "ns": report_ns,
         "floor": "await producer.send(prebuilt)", "floor_ns": send_ns},
    ]
    for row, (name, target) in zip(rows, TARGETS.items(), strict=True):
        row["ratio"] = row["ns"] / row["floor_ns"]
        row["target"] = target
        row["met"] = "yes" if row["ratio"] <= target else "NO"
        row["row"] = name
    print(table(rows, ["call", "ns", "floor", "floor_ns", "ratio", "target", "met"]))
    print(f"(the loop and arguments dict alone: {loop_ns:.0f} ns, in both builder rows)")
    parts = {"progress_ns": status["progress"], "confirm_round_trip_ns": status["confirm"]}
    print(f"a status report's parts: one progress() {status['progress']:,.0f} ns "
          f"({status['progress'] / send_ns:.2f}x a bare send); COMPLETE's confirmation, "
          f"one send + flush round trip, {status['confirm']:,.0f} ns a job")
    extra = {"n": args.n, "runs": args.runs, "loop_ns": loop_ns, **parts}
    print(f"saved {save('api', rows, extra)}")


if __name__ == "__main__":
    main()
