"""Outputs to a queue that declares no schema go as they are (Struct or plain dict)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from mlops_async import App, Pipeline

from .models import Feature, RawEvent
from .test_app import read, send


class Params(msgspec.Struct):
    factor: float = 2.0


async def test_struct_and_dict_outputs_to_queues_without_a_schema() -> None:
    url = f"memory://undeclared-{uuid.uuid4().hex[:8]}"
    app = App("undeclared", url=url)

    @app.handler(input="raw", outputs=["features", "counts"])
    async def featurize(event: RawEvent) -> list[tuple[str, Any]]:  # input from annotation
        return [("features", Feature(event.user, event.value * 2, event.seq)),
                ("counts", {"user": event.user, "n": 1})]

    await send(url, "raw", [RawEvent("u", 1.0, i) for i in range(5)])
    async with app:
        out = await read(url, "features", Feature, 5)
        counts = await read(url, "counts", dict, 5)
    assert sorted(f.seq for f in out) == list(range(5)) and counts[0] == {"user": "u", "n": 1}


async def test_a_stage_with_params_keeps_its_input_annotation() -> None:
    url = f"memory://annot-{uuid.uuid4().hex[:8]}"
    pipeline = Pipeline("annot", url=url)

    @pipeline.stage(input="raw", outputs=["features"], params=Params)
    async def scale(event: RawEvent, params: Params) -> list[tuple[str, Feature]]:
        return [("features", Feature(event.user, event.value * params.factor, event.seq))]

    await send(url, "raw", [RawEvent("u", 1.5, i) for i in range(3)])
    async with pipeline.app_for("scale") as app:
        assert app is not None
        out = await read(url, "features", Feature, 3)
    assert [f.doubled for f in out] == [3.0, 3.0, 3.0]
