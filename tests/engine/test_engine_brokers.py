"""The engine across real brokers and processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mlops_async import App, Consumer, Producer
from mlops_async.demo import run_engine_demo
from mlops_async.metrics import serve_metrics

from ..backends.conftest import KAFKA_CONSUMER_OPTIONS
from ..brokers import free_port
from .models import Feature, RawEvent

ROOT = Path(__file__).resolve().parents[2]


async def read_all(url: str, topic: str, n: int, timeout: float = 30, **kw: Any) -> list[Feature]:
    out: list[Feature] = []
    async with Consumer(url, topic=topic, group=f"r-{uuid.uuid4().hex[:6]}", schema=Feature,
                        auto_offset_reset="earliest", **kw) as c:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n and loop.time() < deadline:
            out += await c.get_messages(timeout=0.5)
    return out


@pytest.mark.redis
async def test_sigterm_drains_a_real_worker_process(redis_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "ENGINE_TEST_URL": redis_url, "ENGINE_TEST_IN": f"in-{tag}",
           "ENGINE_TEST_OUT": f"out-{tag}", "ENGINE_TEST_DELAY": "0.01"}
    n = 400
    async with Producer(redis_url, topic=f"in-{tag}", schema=RawEvent) as p:
        await p.send_many([RawEvent("u", float(i), i) for i in range(n)], flush=True)
    with open(ROOT / f".worker-{tag}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_async", "run", "tests.engine.models:slow_app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        async with Consumer(redis_url, topic=f"out-{tag}", group="watch", schema=Feature,
                            auto_offset_reset="earliest") as watch:
            seen = 0
            while seen < 40:
                seen += len(await watch.get_messages(timeout=0.5))
                assert proc.poll() is None, (ROOT / f".worker-{tag}.log").read_text()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_text = (ROOT / f".worker-{tag}.log").read_text()
        (ROOT / f".worker-{tag}.log").unlink()
    assert code == 0, log_text
    assert "draining" in log_text
    # What the worker did not finish is still there: a new worker of the same app finishes it.
    from . import models

    models.slow_app.url = redis_url
    rest_app = App("slow-worker", url=redis_url)
    rest_app.queue("in", value=f"in-{tag}", schema="tests.engine.models:RawEvent")
    rest_app.queue("out", value=f"out-{tag}", schema="tests.engine.models:Feature")
    rest_app.handler(input="in", outputs=["out"])(models.slow)
    async with rest_app:
        outputs = await read_all(redis_url, f"out-{tag}", n)
    counts = Counter(f.seq for f in outputs)
    assert set(counts) == set(range(n)), "nothing lost"
    assert max(counts.values()) == 1, "nothing processed twice: the drain acknowledged all it did"


@pytest.mark.kafka
@pytest.mark.redis
async def test_one_app_reads_kafka_and_writes_redis(kafka_bootstrap: str, redis_url: str) -> None:
    kafka = f"kafka://{kafka_bootstrap}"
    tag = uuid.uuid4().hex[:8]
    app = App("bridge", url=kafka, consumer_options=KAFKA_CONSUMER_OPTIONS)
    app.queue("raw", value=f"raw-{tag}", schema="tests.engine.models:RawEvent")
    app.queue("features", value=f"feat-{tag}", url=redis_url,
              schema="tests.engine.models:Feature")

    @app.handler(input="raw", outputs=["features"])
    async def bridge(e: RawEvent) -> list[tuple[str, Feature]]:
        return [("features", Feature(e.user, e.value * 2, e.seq))]

    async with app:
        async with Producer(kafka, topic=f"raw-{tag}", schema=RawEvent) as p:
            await p.send_many([RawEvent("u", 1.0, i) for i in range(50)], flush=True)
        out = await read_all(redis_url, f"feat-{tag}", 50)
    assert sorted(f.seq for f in out) == list(range(50))


@pytest.mark.parametrize("backend", ["memory", "kafka", "redis"])
async def test_demo_pipeline_on_the_engine(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "memory":
        url = f"memory://edemo-{uuid.uuid4().hex[:6]}"
    elif backend == "kafka":
        url = f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    else:
        url = request.getfixturevalue("redis_url")
    result = await run_engine_demo(url, 500)
    assert result.stages["train"].messages == 500
    assert result.accuracy > 0.75


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_metrics_are_scraped_over_http() -> None:
    url = f"memory://metrics-{uuid.uuid4().hex[:6]}"
    app = App("scraped", url=url, metrics=True)
    app.queue("raw", schema="tests.engine.models:RawEvent")
    app.queue("features", schema="tests.engine.models:Feature")
    calls = 0

    @app.handler(input="raw", outputs=["features"], retries=1, backoff=0.001)
    async def h(e: RawEvent) -> list[tuple[str, Feature]]:
        nonlocal calls
        calls += 1
        if e.seq == 99:
            raise ValueError("poison")
        return [("features", Feature(e.user, 1.0, e.seq))]

    assert app.metrics is not None
    port = free_port()
    server = serve_metrics(app.metrics, port)
    try:
        async with app:
            async with Producer(url, topic="raw", schema=RawEvent) as p:
                await p.send_many([RawEvent("u", 1.0, i) for i in [*range(5), 99]], flush=True)
            await read_all(url, "features", 5)
            await read_all(url, "raw.dlq", 0, timeout=0.5)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                m = await asyncio.to_thread(scrape, port)
                key = 'messages_consumed_count_total{app="scraped",queue="raw",status="fail"}'
                if m.get(key) == 1.0 or loop.time() > deadline:
                    break
                await asyncio.sleep(0.05)
    finally:
        server.close()
    assert m['messages_consumed_count_total{app="scraped",queue="raw",status="success"}'] == 5
    assert m['messages_consumed_count_total{app="scraped",queue="raw",status="fail"}'] == 1
    produced = 'messages_produced_count_total{app="scraped",destination="features",source="raw"}'
    assert m[produced] == 5
    assert m['dead_letters_total{app="scraped",queue="raw",reason="retries_exhausted"}'] == 1
    assert m['retries_total{app="scraped",queue="raw"}'] == 1
    assert m['process_time_seconds_count{app="scraped",process_name="cycle"}'] == 6
    assert not any("u" == v for v in m), "no message content in labels"
