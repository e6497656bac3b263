"""The demo pipeline: ETL -> train -> evaluate, with status on its own topic.

Each stage is an ordinary asyncio task talking to the others only through
the bus, exactly as separate services would: ETL publishes feature records,
train consumes them (as a consumer group) and fits an online logistic
regression, evaluate scores the model it receives. Every stage reports
START / PROGRESS / COMPLETE on the status topic.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backends import create_backend
from .consumer import Consumer
from .endpoint import resolve_url
from .errors import BusUnavailable
from .message import MessageBuilder, MessageType, MLOpsMessage, Stage
from .producer import Producer

__all__ = ["DemoResult", "run_demo", "run_engine_demo"]

FEATURES = 8


@dataclass
class StageStats:
    name: str
    messages: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def rate(self) -> float:
        took = self.finished - self.started
        return self.messages / took if took > 0 else 0.0


@dataclass
class DemoResult:
    records: int
    accuracy: float
    seconds: float
    stages: dict[str, StageStats] = field(default_factory=dict)
    status_messages: int = 0


def _status(stage: Stage, kind: MessageType, text: str, run_id: str, **args: Any) -> MLOpsMessage:
    return (
        MessageBuilder()
        .with_msg_type(kind)
        .with_creator_type(stage)
        .with_creator(f"demo-{stage.value.lower()}")
        .with_stage(stage)
        .with_correlation_id(run_id)
        .with_user_msg(text)
        .with_additional_arguments(args)
        .build()
    )


def _sample(rng: random.Random, w: list[float]) -> tuple[list[float], int]:
    x = [rng.gauss(0.0, 1.0) for _ in range(FEATURES)]
    score = sum(a * b for a, b in zip(w, x, strict=True))
    return x, int(score + rng.gauss(0.0, 0.5) > 0)


async def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Raise :class:`BusUnavailable` naming ``url`` if its broker does not answer.

    The demo is interactive: a broker that is not there should be said at once,
    not shown as stages "waiting" forever.
    """
    backend = create_backend(await resolve_url(url))
    try:
        async with asyncio.timeout(timeout):
            await backend.connect()
    except (TimeoutError, BusUnavailable) as exc:
        raise BusUnavailable(f"cannot reach the broker at {backend!r} ({url.split('://')[0]}://): "
                             f"{exc or 'no answer'}") from exc
    finally:
        await backend.close()


async def run_demo(
    url: str = "memory://demo",
    records: int = 20_000,
    *,
    prefix: str = "demo",
    on_status: Callable[[MLOpsMessage], None] | None = None,
    seed: int = 7,
) -> DemoResult:
    """Run the three-stage pipeline once on ``url`` and return what it measured."""
    await check_reachable(url)
    run_id = f"{prefix}-{int(time.time() * 1000)}"
    t_features, t_models, t_status = f"{prefix}.features", f"{prefix}.models", f"{prefix}.status"
    rng = random.Random(seed)
    true_w = [rng.uniform(-2, 2) for _ in range(FEATURES)]
    stats = {s: StageStats(s) for s in ("etl", "train", "evaluate")}
    result = DemoResult(records, 0.0, 0.0, stats)
    t0 = time.perf_counter()

    async with (
        Producer(url, topic=t_status) as status,
        Consumer(
            url, topic=t_status, group=f"{run_id}.watch", auto_offset_reset="earliest"
        ) as status_in,
        Consumer(
            url, topic=t_features, group=f"{run_id}.train", auto_offset_reset="earliest"
        ) as features_in,
        Consumer(
            url, topic=t_models, group=f"{run_id}.eval", auto_offset_reset="earliest"
        ) as models_in,
    ):

        async def etl() -> None:
            st = stats["etl"]
            st.started = time.perf_counter()
            await status.send(_status(Stage.ETL, MessageType.START, "extracting", run_id))
            async with Producer(url, topic=t_features) as out:
                for i in range(records):
                    x, y = _sample(rng, true_w)
                    msg = (
                        MessageBuilder()
                        .with_msg_type(MessageType.DATA)
                        .with_creator_type(Stage.ETL)
                        .with_creator("demo-etl")
                        .with_next_task(Stage.TRAIN)
                        .with_correlation_id(run_id)
                        .with_additional_arguments({"x": x, "y": y, "i": i})
                        .build()
                    )
                    await out.send(msg)
                await out.send(
                    _status(Stage.ETL, MessageType.COMPLETE, "end of data", run_id, count=records)
                )
            st.messages = records
            st.finished = time.perf_counter()
            await status.send(
                _status(Stage.ETL, MessageType.COMPLETE, "extracted", run_id, count=records)
            )

        async def train() -> None:
            st = stats["train"]
            w = [0.0] * FEATURES
            lr = 0.05
            await status.send(_status(Stage.TRAIN, MessageType.START, "training", run_id))
            async for msg in features_in:
                if msg.msg_type is MessageType.COMPLETE:
                    break
                if st.messages == 0:
                    st.started = time.perf_counter()
                x, y = msg.additional_arguments["x"], msg.additional_arguments["y"]
                z = sum(a * b for a, b in zip(w, x, strict=True))
                p = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
                g = p - y
                w = [wi - lr * g * xi for wi, xi in zip(w, x, strict=True)]
                st.messages += 1
                if st.messages % max(1, records // 10) == 0:
                    await status.send(
                        _status(
                            Stage.TRAIN,
                            MessageType.PROGRESS,
                            "training",
                            run_id,
                            percent=round(100 * st.messages / records),
                            seen=st.messages,
                        )
                    )
            st.finished = time.perf_counter()
            await status.send(
                _status(Stage.TRAIN, MessageType.COMPLETE, "trained", run_id, seen=st.messages)
            )
            async with Producer(url, topic=t_models) as out:
                await out.send(
                    MessageBuilder()
                    .with_msg_type(MessageType.DATA)
                    .with_creator_type(Stage.TRAIN)
                    .with_creator("demo-train")
                    .with_next_task(Stage.EVALUATE)
                    .with_correlation_id(run_id)
                    .with_argument("weights", w)
                    .build(),
                    flush=True,
                )

        async def evaluate() -> None:
            st = stats["evaluate"]
            async for model in models_in:
                st.started = time.perf_counter()
                await status.send(_status(Stage.EVALUATE, MessageType.START, "scoring", run_id))
                w = model.additional_arguments["weights"]
                test_rng = random.Random(seed + 1)
                correct, n = 0, 2000
                for _ in range(n):
                    x, y = _sample(test_rng, true_w)
                    z = sum(a * b for a, b in zip(w, x, strict=True))
                    correct += int((z > 0) == bool(y))
                result.accuracy = correct / n
                st.messages = n
                st.finished = time.perf_counter()
                await status.send(
                    _status(
                        Stage.EVALUATE,
                        MessageType.COMPLETE,
                        "evaluated",
                        run_id,
                        accuracy=result.accuracy,
                    ),
                    flush=True,
                )
                return

        async def watch() -> None:
            # Stages finish concurrently: wait for every stage's COMPLETE, whatever the order.
            pending = {Stage.ETL, Stage.TRAIN, Stage.EVALUATE}
            async for msg in status_in:
                result.status_messages += 1
                if on_status is not None:
                    on_status(msg)
                if msg.msg_type is MessageType.COMPLETE:
                    pending.discard(msg.stage)
                    if not pending:
                        return

        await asyncio.gather(etl(), train(), evaluate(), watch())
    result.seconds = time.perf_counter() - t0
    return result


async def run_engine_demo(
    url: str = "memory://demo", records: int = 2_000, *, prefix: str = "edemo", seed: int = 7
) -> DemoResult:
    """The same pipeline with train and evaluate as stream-engine handlers."""
    from .app import App

    await check_reachable(url)
    run_id = f"{prefix}-{int(time.time() * 1000)}"
    rng = random.Random(seed)
    true_w = [rng.uniform(-2, 2) for _ in range(FEATURES)]
    stats = {s: StageStats(s) for s in ("etl", "train", "evaluate")}
    result = DemoResult(records, 0.0, 0.0, stats)
    app = App(f"{run_id}.app", url=url, max_concurrency=1)  # training is sequential
    app.queue("features", value=f"{prefix}.{run_id}.features")
    app.queue("models", value=f"{prefix}.{run_id}.models")
    app.queue("status", value=f"{prefix}.{run_id}.status")
    w = [0.0] * FEATURES
    finished = asyncio.Event()

    @app.handler(input="features", outputs=["models", "status"])
    async def train(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]] | None:
        nonlocal w
        st = stats["train"]
        if msg.msg_type is MessageType.COMPLETE:
            st.finished = time.perf_counter()
            model = (
                MessageBuilder().with_msg_type(MessageType.DATA).with_creator_type(Stage.TRAIN)
                .with_correlation_id(run_id).with_argument("weights", w).build()
            )
            done = _status(Stage.TRAIN, MessageType.COMPLETE, "trained", run_id, seen=st.messages)
            result.status_messages += 1
            return [("models", model), ("status", done)]
        if st.messages == 0:
            st.started = time.perf_counter()
        x, y = msg.additional_arguments["x"], msg.additional_arguments["y"]
        z = sum(a * b for a, b in zip(w, x, strict=True))
        g = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))) - y
        w = [wi - 0.05 * g * xi for wi, xi in zip(w, x, strict=True)]
        st.messages += 1
        return None

    @app.handler(input="models", outputs=["status"])
    async def evaluate(model: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        st = stats["evaluate"]
        st.started = time.perf_counter()
        weights = model.additional_arguments["weights"]
        test_rng = random.Random(seed + 1)
        correct = 0
        for _ in range(2000):
            x, y = _sample(test_rng, true_w)
            correct += int((sum(a * b for a, b in zip(weights, x, strict=True)) > 0) == bool(y))
        result.accuracy = correct / 2000
        st.messages = 2000
        st.finished = time.perf_counter()
        finished.set()
        result.status_messages += 1
        return [("status", _status(Stage.EVALUATE, MessageType.COMPLETE, "evaluated", run_id,
                                   accuracy=result.accuracy))]

    t0 = time.perf_counter()
    async with app, Producer(url, topic=app.queues["features"].topic) as out:
        st = stats["etl"]
        st.started = time.perf_counter()
        for i in range(records):
            x, y = _sample(rng, true_w)
            await out.send(
                MessageBuilder().with_msg_type(MessageType.DATA).with_creator_type(Stage.ETL)
                .with_correlation_id(run_id).with_additional_arguments({"x": x, "y": y, "i": i})
                .build()
            )
        await out.send(_status(Stage.ETL, MessageType.COMPLETE, "end of data", run_id),
                       flush=True)
        st.messages = records
        st.finished = time.perf_counter()
        await asyncio.wait_for(finished.wait(), 120)
    result.seconds = time.perf_counter() - t0
    return result
