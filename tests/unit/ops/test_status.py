"""Task status reporting, its webhook, and the FastAPI example."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlops_async import Consumer, MessageType, MLOpsMessage, Producer, Stage
from mlops_async.status import Webhook, reports_status

ROOT = Path(__file__).resolve().parents[3]


async def statuses(url: str, topic: str = "status", n: int = 1) -> list[MLOpsMessage]:
    async with Consumer(url, topic=topic, group=f"s-{uuid.uuid4().hex[:6]}",
                        auto_offset_reset="earliest") as c:
        out: list[MLOpsMessage] = []
        for _ in range(50):
            out += await c.get_messages(timeout=0.05)
            if len(out) >= n:
                break
        return out


async def test_success_reports_start_progress_complete_with_data() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        async with p.task("run-1", creator="trainer", stage="TRAIN") as t:
            await t.progress(percent=50, loss=0.3)
            t.result(accuracy=0.9)
    got = await statuses(url, n=3)
    assert [m.msg_type for m in got] == [MessageType.START, MessageType.PROGRESS,
                                         MessageType.COMPLETE]
    assert {m.correlation_id for m in got} == {"run-1"}
    assert got[1].additional_arguments == {"percent": 50, "loss": 0.3}
    assert got[2].additional_arguments == {"accuracy": 0.9} and got[2].stage == "TRAIN"


async def test_a_changed_stage_or_creator_applies_to_the_reports_after_it() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        async with p.task("run-s", creator="trainer", stage=Stage.TRAIN) as t:
            t.stage = Stage.EVALUATE
            t.creator = "evaluator"
            await t.progress(percent=50)
    got = await statuses(url, n=3)
    assert [(m.stage, m.creator) for m in got] == [
        ("TRAIN", "trainer"), ("EVALUATE", "evaluator"), ("EVALUATE", "evaluator")]
    assert all(type(m.stage) is str for m in got) and t.stage is Stage.EVALUATE


async def test_failure_reports_type_and_message_then_reraises() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        with pytest.raises(ValueError, match="bad data"):
            async with p.task("run-2"):
                raise ValueError("bad data")
    start, failure = await statuses(url, n=2)
    assert start.msg_type is MessageType.START
    assert failure.msg_type is MessageType.FAILURE
    assert failure.additional_arguments == {"error_type": "ValueError", "error": "bad data"}
    assert "Traceback" not in msgspec.json.encode(failure).decode()


async def test_decorator_form() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        @reports_status(p, stage="EVALUATE")
        async def evaluate(model: str, *, correlation_id: str) -> dict[str, Any]:
            return {"auc": 0.8, "model": model}

        assert await evaluate("m1", correlation_id="run-3") == {"auc": 0.8, "model": "m1"}
        with pytest.raises(TypeError, match="correlation_id"):
            await evaluate("m1")  # type: ignore[call-arg]
    got = await statuses(url, n=2)
    assert got[-1].additional_arguments == {"auc": 0.8, "model": "m1"}
    assert got[-1].creator == "evaluate"


async def test_complete_sets_the_message_and_data_of_the_final_report() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        async with p.task("run-c") as t:
            t.result(accuracy=0.9)
            t.complete("model saved", path="s3://models/7", text="any key is fine")
    *_, done = await statuses(url, n=2)
    assert done.msg_type is MessageType.COMPLETE and done.user_message == "model saved"
    assert done.additional_arguments == {"accuracy": 0.9, "path": "s3://models/7",
                                         "text": "any key is fine"}


async def test_fail_reports_failure_with_its_message_and_data_without_raising() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        async with p.task("run-f") as t:
            t.fail("input had no rows", rows=0)
            t.result(source="s3://d")  # data set after fail() is reported too
    *_, failure = await statuses(url, n=2)
    assert failure.msg_type is MessageType.FAILURE
    assert failure.user_message == "input had no rows"
    assert failure.additional_arguments == {"rows": 0, "source": "s3://d"}


async def test_automatic_failure_keeps_the_error_and_the_result_data() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        with pytest.raises(RuntimeError, match="diverged"):
            async with p.task("run-a") as t:
                t.result(epoch=3)
                t.complete("never sent")  # the exception decides the outcome
                raise RuntimeError("diverged")
    *_, failure = await statuses(url, n=2)
    assert failure.msg_type is MessageType.FAILURE
    assert failure.additional_arguments == {"epoch": 3, "error_type": "RuntimeError",
                                            "error": "diverged"}


async def test_a_cancelled_task_reports_failure_and_stays_cancelled() -> None:
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    async with Producer(url) as p:
        entered = asyncio.Event()

        async def job() -> None:
            async with p.task("run-x"):
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(job())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    *_, failure = await statuses(url, n=2)
    assert failure.msg_type is MessageType.FAILURE
    assert failure.additional_arguments["error_type"] == "CancelledError"
    assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_a_report_that_cannot_be_sent_never_masks_the_task_error() -> None:
    p: Producer = Producer(f"memory://status-{uuid.uuid4().hex[:6]}")
    await p.start()
    with pytest.raises(ValueError, match="the real error"):
        async with p.task("run-m"):
            await p.close()  # the FAILURE report will meet a closed producer
            raise ValueError("the real error")


class Recorder:
    """A tiny HTTP server on loopback that records POST bodies and headers."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.auth: list[str] = []
        self.status = status
        self.delay = delay

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:] if x)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        await asyncio.sleep(self.delay)
        self.bodies.append(body)
        self.auth.append(headers.get("authorization", ""))
        writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()


async def test_webhook_posts_json_with_token_from_env(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLOPS_STATUS_TOKEN", "tok-secret-123")
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    hook = Webhook(f"http://127.0.0.1:{port}/status", timeout=2)
    try:
        async with Producer(url) as p, p.task("run-4", webhook=hook) as t:
            t.result(ok=True)
        await hook.drain()
    finally:
        await hook.close()
        server.close()
        await server.wait_closed()
    kinds = [msgspec.json.decode(b)["msg_type"] for b in rec.bodies]
    assert kinds == ["START", "COMPLETE"]
    assert rec.auth == ["Bearer tok-secret-123"] * 2
    assert "tok-secret-123" not in caplog.text and "tok-secret-123" not in repr(hook)


async def test_slow_webhook_never_blocks_the_task() -> None:
    rec = Recorder(delay=0.5)
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hook = Webhook(f"http://127.0.0.1:{port}/", timeout=0.2, retries=0)
    url = f"memory://status-{uuid.uuid4().hex[:6]}"
    try:
        async with Producer(url) as p:
            async with p.task("run-5", webhook=hook) as t:
                for i in range(20):
                    await t.progress(percent=i)
            # The task is done while the webhook still works through its backlog.
            assert hook._queue.qsize() > 0, "status calls waited for the webhook"
    finally:
        await hook.close()
        await asyncio.sleep(0.6)  # the recorder's delayed handlers finish and close
        server.close()
        await server.wait_closed()
    assert hook.failed >= 1 and len(await statuses(url, n=22)) == 22


def load_example() -> Any:
    path = ROOT / "examples" / "fastapi_service" / "app.py"
    spec = importlib.util.spec_from_file_location(f"fastapi_example_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def drive_fastapi(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setenv("MLOPS_BUS_URL", url)
    example = load_example()
    app = example.app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/jobs", json={"dataset": "s3://d", "epochs": 3})
            assert r.status_code == 202
            job = r.json()["id"]
            bad = (await client.post("/jobs", json={"dataset": "x", "fail": True})).json()["id"]
            status: dict[str, Any] = {}
            for _ in range(200):
                status = (await client.get(f"/jobs/{job}")).json()
                failed = await client.get(f"/jobs/{bad}")
                if status.get("status") == "COMPLETE" and failed.json().get("status") == "FAILURE":
                    break
                await asyncio.sleep(0.02)
            assert status["status"] == "COMPLETE"
            assert status["data"] == {"accuracy": 0.93, "dataset": "s3://d"}
            assert failed.json()["data"]["error"] == "diverged at epoch 1"
            assert (await client.get("/jobs/nope")).status_code == 404
            # An orchestrator's own correlation id is used, not a new one.
            r = await client.post("/jobs", json={"dataset": "s3://e", "epochs": 1,
                                                 "correlation_id": "orch-42"})
            assert r.json()["id"] == "orch-42"
            for _ in range(200):
                if (await client.get("/jobs/orch-42")).json().get("status") == "COMPLETE":
                    break
                await asyncio.sleep(0.02)
            assert (await client.get("/jobs/orch-42")).json()["status"] == "COMPLETE"


async def test_fastapi_service_on_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    await drive_fastapi(f"memory://fastapi-{uuid.uuid4().hex[:6]}", monkeypatch)


@pytest.mark.redis
async def test_fastapi_service_on_redis(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    await drive_fastapi(redis_url, monkeypatch)
