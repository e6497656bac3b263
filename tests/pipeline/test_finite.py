"""Pipelines that start and end: sources, the end of the stream downstream, hooks."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlops_async import App, MLOpsMessage

ROOT = Path(__file__).resolve().parents[2]


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, n: int = 50) -> object:
    monkeypatch.setenv("FINITE_URL", url)
    monkeypatch.setenv("FINITE_OUT", str(tmp_path / "read.txt"))
    monkeypatch.setenv("FINITE_N", str(n))
    monkeypatch.setenv("FINITE_PREFIX", f"fin-{uuid.uuid4().hex[:8]}")
    import tests.pipeline_finite as module

    return importlib.reload(module)


def read_ids(tmp_path: Path) -> list[int]:
    path = tmp_path / "read.txt"
    return sorted(int(x) for x in path.read_text().split()) if path.exists() else []


async def test_a_finite_pipeline_runs_to_the_end_in_one_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load(monkeypatch, tmp_path, f"memory://fin-{uuid.uuid4().hex[:6]}")
    async with asyncio.timeout(60):
        await module.pipeline.run(install_signals=False)  # type: ignore[attr-defined]
    assert read_ids(tmp_path) == list(range(50))
    events = module.events  # type: ignore[attr-defined]
    # Every replica of every stage (1 writer, 2 doublers, 1 reader) started and shut down.
    assert events.count("startup") == 4 and events.count("shutdown") == 4


@pytest.mark.redis
async def test_a_finite_pipeline_ends_on_redis(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path, redis_url: str) -> None:
    module = load(monkeypatch, tmp_path, redis_url, n=200)
    async with asyncio.timeout(60):
        await module.pipeline.run(install_signals=False)  # type: ignore[attr-defined]
    assert read_ids(tmp_path) == list(range(200))


@pytest.mark.redis
def test_stages_in_separate_processes_end_and_exit_zero(tmp_path: Path, redis_url: str) -> None:
    env = {**os.environ, "FINITE_URL": redis_url, "FINITE_OUT": str(tmp_path / "read.txt"),
           "FINITE_N": "300", "FINITE_PREFIX": f"fin-{uuid.uuid4().hex[:8]}",
           "MLOPS_RUN_ID": uuid.uuid4().hex, "MLOPS_BUS_URL": ""}

    def start(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "mlops_async", "run",
                                 "tests.pipeline_finite:pipeline", *args], cwd=ROOT, env=env)

    # Downstream first: they wait for the end to come, however late the source starts.
    procs = [start("--stage", "reader"), start("--stage", "double", "--replicas", "2")]
    writer = start("--stage", "writer")
    try:
        assert writer.wait(60) == 0
        assert [p.wait(60) for p in procs] == [0, 0]
    finally:
        for p in (writer, *procs):
            if p.poll() is None:
                p.kill()
    assert read_ids(tmp_path) == list(range(300))


async def test_app_hooks_and_on_error() -> None:
    url = f"memory://hooks-{uuid.uuid4().hex[:6]}"
    app = App("hooks", url=url, sleep=_no_wait)
    seen: list[object] = []
    app.on_startup(lambda: seen.append("up"))

    @app.on_shutdown
    async def down() -> None:
        seen.append("down")

    @app.on_error
    def failed(exc: BaseException, msg: MLOpsMessage) -> None:
        seen.append((type(exc).__name__, msg.additional_arguments["i"]))

    @app.source(outputs=["in"])
    async def feed() -> list[tuple[str, MLOpsMessage]]:
        from ..conftest import make_msg

        return [("in", make_msg(i)) for i in range(3)]

    @app.handler(input="in", retries=0)
    async def handle(msg: MLOpsMessage) -> None:
        if msg.additional_arguments["i"] == 1:
            raise ValueError("bad one")

    async with app:
        async with asyncio.timeout(10):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
    assert seen == ["up", ("ValueError", 1), "down"]


async def _no_wait(_: float) -> None:
    return None


@pytest.mark.kafka
def test_stages_in_separate_processes_end_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = {**os.environ, "FINITE_URL": f"kafka://{kafka_bootstrap}",
           "FINITE_OUT": str(tmp_path / "read.txt"), "FINITE_N": "200",
           "FINITE_PREFIX": f"fin-{uuid.uuid4().hex[:8]}", "MLOPS_RUN_ID": uuid.uuid4().hex,
           "MLOPS_BUS_URL": ""}

    def start(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "mlops_async", "run",
                                 "tests.pipeline_finite:pipeline", *args], cwd=ROOT, env=env)

    procs = [start("--stage", "reader"), start("--stage", "double", "--replicas", "2")]
    writer = start("--stage", "writer")
    try:
        assert writer.wait(90) == 0
        assert [p.wait(90) for p in procs] == [0, 0]
    finally:
        for p in (writer, *procs):
            if p.poll() is None:
                p.kill()
    assert read_ids(tmp_path) == list(range(200))
