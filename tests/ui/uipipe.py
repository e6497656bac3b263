"""The pipeline the page tests watch: `mlops-async run tests.ui.uipipe:pipeline --stage parse`.

parse (2 replicas) -> mid -> sink; sink fails on a poisoned message until ``FIXED`` is
set, so the test can dead-letter one, "fix" the stage and replay it.
"""

from __future__ import annotations

import os
from typing import Any

from mlops_async import MLOpsMessage, Pipeline

PREFIX = os.environ.get("UI_PREFIX", "uit")
FIXED = {"sink": False}
SEEN: list[int] = []

pipeline = Pipeline("uit", url=os.environ.get("UI_URL"),
                    app_options={"heartbeat": float(os.environ.get("UI_HEARTBEAT", "0.3"))})
pipeline.queue("in", value=f"{PREFIX}.in")
pipeline.queue("mid", value=f"{PREFIX}.mid")


@pipeline.stage(input="in", outputs=["mid"], replicas=2)
async def parse(msg: MLOpsMessage) -> list[tuple[str, Any]]:
    return [("mid", msg)]


@pipeline.stage(input="mid", retries=0)
async def sink(msg: MLOpsMessage) -> None:
    if msg.additional_arguments.get("poison") and not FIXED["sink"]:
        raise ValueError(f"poisoned record {msg.additional_arguments['i']}")
    SEEN.append(msg.additional_arguments["i"])
