"""examples/fastapi_service without the bus: bench_fastapi.py's floor.

The same routes, request model and background work (``epochs`` sleeps of 10 ms
per job); the latest status of each job is kept in a bounded dict instead of
being published and read back.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="jobs (no bus)")
latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
jobs: set[asyncio.Task[None]] = set()
MAX_JOBS = 10_000


class JobRequest(BaseModel):
    dataset: str
    epochs: int = 3
    fail: bool = False
    correlation_id: str | None = None


def report(job_id: str, status: str, data: dict[str, Any]) -> None:
    latest[job_id] = {"status": status, "stage": "TRAIN", "data": data}
    latest.move_to_end(job_id)
    if len(latest) > MAX_JOBS:
        latest.popitem(last=False)


async def run_job(job_id: str, req: JobRequest) -> None:
    report(job_id, "START", {})
    try:
        for epoch in range(1, req.epochs + 1):
            await asyncio.sleep(0.01)
            if req.fail:
                raise RuntimeError(f"diverged at epoch {epoch}")
            report(job_id, "PROGRESS", {"percent": round(100 * epoch / req.epochs),
                                        "epoch": epoch})
    except RuntimeError as exc:
        report(job_id, "FAILURE", {"error_type": "RuntimeError", "error": str(exc)})
        return
    report(job_id, "COMPLETE", {"accuracy": 0.93, "dataset": req.dataset})


@app.post("/jobs", status_code=202)
async def create_job(req: JobRequest) -> dict[str, str]:
    job_id = req.correlation_id or os.urandom(16).hex()
    task = asyncio.create_task(run_job(job_id, req))
    jobs.add(task)
    task.add_done_callback(jobs.discard)
    return {"id": job_id}


@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> dict[str, Any]:
    status = latest.get(job_id)
    if status is None:
        raise HTTPException(404, "unknown job (or no status yet)")
    return {"id": job_id, **status}
