"""Task status reporting: START, PROGRESS, COMPLETE (or FAILURE) of one job."""

from __future__ import annotations

import asyncio

from mlops_async import Consumer, MLOpsMessage, Producer


async def report(url: str = "memory://status") -> list[MLOpsMessage]:
    async with Consumer(url, topic="status", group="watch",
                        auto_offset_reset="earliest") as watcher:
        async with Producer(url, topic="status") as producer:
            correlation_id = "job-17"
            # --8<-- [start:task]
            async with producer.task(correlation_id, creator="trainer", stage="TRAIN") as task:
                await task.progress(percent=50, loss=0.31)    # PROGRESS
                task.result(accuracy=0.94)                     # attached to COMPLETE
            # --8<-- [end:task]
        reports: list[MLOpsMessage] = []
        while len(reports) < 3:
            reports += await watcher.get_messages(timeout=5)
    return reports


if __name__ == "__main__":
    for r in asyncio.run(report()):
        print(r.msg_type, dict(r.additional_arguments))
