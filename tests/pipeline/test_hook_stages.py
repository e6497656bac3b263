"""A pipeline's start-up hook can name the stages it belongs to (default: every stage).

``@pipeline.on_startup`` ran in every stage and replica: a ``load_model`` hook
loaded the model in the writer too. ``@pipeline.on_startup(stages=["reader"])``
runs it only where it is needed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from mlops_async import ConfigurationError, MessageBuilder, MessageType, MLOpsMessage, Pipeline


def _pipeline() -> tuple[Pipeline, list[str]]:
    calls: list[str] = []
    pipeline = Pipeline("hooks", url=f"memory://hooks-{uuid.uuid4().hex[:6]}")

    @pipeline.stage(outputs=["records"])
    async def writer() -> AsyncIterator[tuple[str, MLOpsMessage]]:
        for i in range(3):
            yield "records", MessageBuilder().with_msg_type(MessageType.DATA).with_argument(
                "i", i).build()

    @pipeline.stage(input="records")
    async def reader(msg: MLOpsMessage) -> None:
        return None

    return pipeline, calls


async def test_a_hook_that_names_its_stages_runs_only_there() -> None:
    pipeline, calls = _pipeline()

    @pipeline.on_startup(stages=["reader"])
    def load_model() -> None:
        calls.append("load_model")

    @pipeline.on_startup
    def everywhere() -> None:
        calls.append("everywhere")

    @pipeline.on_shutdown(stages=["writer"])
    async def close_writer() -> None:
        calls.append("close_writer")

    async with asyncio.timeout(30):
        await pipeline.run(install_signals=False)
    assert sorted(calls) == ["close_writer", "everywhere", "everywhere", "load_model"]


def test_a_hook_naming_an_unknown_stage_is_refused() -> None:
    pipeline, _ = _pipeline()

    @pipeline.on_startup(stages=["raeder"])
    def load_model() -> None: ...

    with pytest.raises(ConfigurationError, match="raeder"):
        pipeline.app_for("reader")
