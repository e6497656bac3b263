"""A FastAPI service that starts ML jobs and reports their status over the bus.

    pip install 'mlops-async[all,serve]'
    MLOPS_BUS_URL=redis://localhost:6379/0 uvicorn app:app

POST /jobs publishes a START message on the jobs topic, runs the job in the
background (reporting PROGRESS and COMPLETE/FAILURE on the status topic) and
answers 202 at once with the job's id: the request's ``correlation_id`` when
the orchestrator sends one, a new id otherwise. GET /jobs/{id} answers with the latest status, read
back from the status topic, so any replica of the service can answer it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from mlops_async import Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer, Stage
from mlops_async.message import new_id

STATUS_TOPIC = "jobs.status"
JOBS_TOPIC = "jobs.requests"


class JobRequest(BaseModel):
    dataset: str
    epochs: int = 3
    fail: bool = False
    # The orchestrator's id for this job, if it has one: every status report carries it.
    correlation_id: str | None = None


class StatusBoard:
    """Latest status per job, fed by a consumer of the status topic (bounded LRU)."""

    def __init__(self, url: str, max_jobs: int = 10_000) -> None:
        # No group: every replica of the service sees every status.
        self.consumer: Consumer[MLOpsMessage] = Consumer(url, topic=STATUS_TOPIC,
                                                         auto_offset_reset="earliest")
        self.latest: OrderedDict[str, MLOpsMessage] = OrderedDict()
        self.max_jobs = max_jobs
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for msg in self.consumer:
            if msg.correlation_id:
                self.latest[msg.correlation_id] = msg
                self.latest.move_to_end(msg.correlation_id)
                if len(self.latest) > self.max_jobs:
                    self.latest.popitem(last=False)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.close()


async def run_job(producer: Producer[Any], job_id: str, req: JobRequest) -> None:
    """The background work: reports START/PROGRESS/COMPLETE, or FAILURE if it raises."""
    async with producer.task(job_id, topic=STATUS_TOPIC, creator="jobs-api",
                             stage=Stage.TRAIN) as task:
        for epoch in range(1, req.epochs + 1):
            await asyncio.sleep(0.01)  # stand-in for a training epoch
            if req.fail:
                raise RuntimeError(f"diverged at epoch {epoch}")
            await task.progress(percent=round(100 * epoch / req.epochs), epoch=epoch)
        task.result(accuracy=0.93, dataset=req.dataset)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("MLOPS_BUS_URL", "memory://fastapi-example")
    # Many small reports from many jobs: a 5 ms linger sends them to the broker in
    # batches (one round trip for many) at the cost of 5 ms of status latency.
    producer: Producer[Any] = Producer(url, linger=0.005)
    board = StatusBoard(url)
    await producer.start()
    await board.start()
    app.state.producer, app.state.board, app.state.jobs = producer, board, set()
    try:
        yield
    finally:
        jobs = app.state.jobs
        await asyncio.gather(*jobs, return_exceptions=True)  # let running jobs report
        await board.close()
        await producer.close()


app = FastAPI(title="jobs", lifespan=lifespan)


@app.post("/jobs", status_code=202)
async def create_job(req: JobRequest) -> dict[str, str]:
    job_id = req.correlation_id or new_id()
    producer: Producer[Any] = app.state.producer
    await producer.send(
        MessageBuilder().with_msg_type(MessageType.START).with_creator_type("jobs-api")
        .with_correlation_id(job_id).with_next_task(Stage.TRAIN)
        .with_additional_arguments({"dataset": req.dataset, "epochs": req.epochs,
                                    "fail": req.fail}).build(),
        topic=JOBS_TOPIC,
    )
    task = asyncio.create_task(run_job(producer, job_id, req))
    app.state.jobs.add(task)
    task.add_done_callback(_job_done)
    return {"id": job_id}


def _job_done(task: asyncio.Task[None]) -> None:
    app.state.jobs.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # FAILURE was already reported on the status topic; log it here too.
        logging.getLogger("jobs-api").warning("job failed: %r", task.exception())


@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> dict[str, Any]:
    msg = app.state.board.latest.get(job_id)
    if msg is None:
        raise HTTPException(404, "unknown job (or no status yet)")
    return {"id": job_id, "status": msg.msg_type.value, "stage": msg.stage,
            "data": msg.additional_arguments}
