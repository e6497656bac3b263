"""Pipelines: typed parameters, stages in one process, replica processes on Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlops_async import ConfigurationError, Consumer, MLOpsMessage, Pipeline, Producer

from ..conftest import make_msg

ROOT = Path(__file__).resolve().parents[2]


class TrainParams(msgspec.Struct):
    model_dir: str
    lr: float = 0.01
    epochs: int = 3


def make_pipeline(url: str, **kw: Any) -> Pipeline:
    p = Pipeline("churn", url=url, **kw)

    @p.stage(input="raw", outputs=["features"], replicas=2)
    async def featurize(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("features", msg)]

    @p.stage(input="features", outputs=["models"], params=TrainParams)
    async def train(msg: MLOpsMessage, params: TrainParams) -> list[tuple[str, MLOpsMessage]]:
        return [("models", msg.to_builder().with_argument("lr", params.lr).build())]

    return p


def test_parameters_from_config_env_and_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    p = make_pipeline("memory://x", params={"train": {"model_dir": "/cfg", "lr": 0.5}})
    assert p.params_for("train") == TrainParams("/cfg", 0.5, 3)
    monkeypatch.setenv("MLOPS_PARAM_TRAIN_LR", "0.25")
    monkeypatch.setenv("MLOPS_PARAM_TRAIN_EPOCHS", "7")
    assert p.params_for("train") == TrainParams("/cfg", 0.25, 7)
    assert p.params_for("train", {"lr": "0.125"}).lr == 0.125  # the CLI wins
    with pytest.raises(ConfigurationError, match="no parameter 'depth'"):
        p.params_for("train", {"depth": "3"})
    with pytest.raises(ConfigurationError, match="model_dir"):
        make_pipeline("memory://y").params_for("train")  # required and unset
    with pytest.raises(ConfigurationError, match="epochs"):
        p.params_for("train", {"epochs": "many"})
    with pytest.raises(ConfigurationError, match="no stage 'nope'"):
        p.params_for("nope")


async def test_whole_pipeline_in_one_process_with_replicas() -> None:
    url = f"memory://pipe-{uuid.uuid4().hex[:6]}"
    p = make_pipeline(url, params={"train": {"model_dir": "/m", "lr": 0.3}})
    runner = asyncio.create_task(p.run(install_signals=False))
    async with Producer(url, topic="raw") as prod:
        await prod.send_many([make_msg(i) for i in range(20)], flush=True)
    async with Consumer(url, topic="models", group="check", auto_offset_reset="earliest") as c:
        got: list[MLOpsMessage] = []
        for _ in range(100):
            got += await c.get_messages(timeout=0.05)
            if len(got) >= 20:
                break
    p.stop()
    await asyncio.wait_for(runner, 10)
    assert sorted(m.additional_arguments["i"] for m in got) == list(range(20))
    assert {m.additional_arguments["lr"] for m in got} == {0.3}


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.kafka
@pytest.mark.slow
async def test_three_replica_processes_share_six_partitions(kafka_bootstrap: str) -> None:
    from mlops_async import Admin

    url = f"kafka://{kafka_bootstrap}"
    tag = uuid.uuid4().hex[:8]
    t_in, t_out = f"pin-{tag}", f"pout-{tag}"
    async with Admin(url) as admin:
        await admin.create_topic(t_in, partitions=6)
        await admin.create_topic(t_out, partitions=3)
    env = {**os.environ, "PIPE_URL": url, "PIPE_IN": t_in, "PIPE_OUT": t_out}
    parent = subprocess.Popen(
        [sys.executable, "-m", "mlops_async", "run", "tests.pipeline_app:pipeline",
         "--stage", "work", "--replicas", "3", "--param", "tag=replica"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    outputs: list[MLOpsMessage] = []
    try:
        async with Consumer(url, topic=t_out, group=f"check-{tag}",
                            auto_offset_reset="earliest") as out, \
                Producer(url, topic=t_in) as prod:
            async def collect(n: int, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while len(outputs) < n and time.monotonic() < deadline:
                    outputs.extend(await out.get_messages(timeout=0.5))

            # Warm up until every replica has joined and the group is stable.
            for i in range(1000, 1006):
                await prod.send(make_msg(i), key=str(i))
            await collect(6, 60)
            deadline = time.monotonic() + 60
            while len(children(parent.pid)) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(8)  # the last member's join settles
            outputs.clear()
            # Steady state: 300 messages, each processed exactly once, by all replicas.
            for i in range(300):
                await prod.send(make_msg(i), key=str(i))
            await prod.flush()
            await collect(300, 60)
            steady = Counter(m.additional_arguments["i"] for m in outputs)
            assert set(steady) == set(range(300))
            assert max(steady.values()) == 1, "steady state: each message once"
            pids = {m.additional_arguments["pid"] for m in outputs}
            assert len(pids) == 3, f"3 replicas shared the work, saw {len(pids)}"
            assert {m.additional_arguments["tag"] for m in outputs} == {"replica"}
            # Kill one replica mid-stream: nothing is lost.
            outputs.clear()
            for i in range(300, 900):
                await prod.send(make_msg(i), key=str(i))
                if i == 450:
                    os.kill(children(parent.pid)[0], signal.SIGKILL)
            await prod.flush()
            await collect(600, 90)
            after = Counter(m.additional_arguments["i"] for m in outputs)
            assert set(range(300, 900)) <= set(after), "nothing lost after a replica died"
    finally:
        parent.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(parent.wait, 30)
        except subprocess.TimeoutExpired:
            for pid in children(parent.pid):
                os.kill(pid, signal.SIGKILL)
            parent.kill()
