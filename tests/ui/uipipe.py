"""The pipeline the page tests watch: `mlops-async run tests.ui.uipipe:pipeline --stage parse`.

parse (2 replicas) -> mid -> sink; sink fails on a poisoned message until its pipeline is
marked fixed, so a test can dead-letter one, "fix" the stage and replay it.
"""

from __future__ import annotations

import os
from typing import Any

from mlops_async import MLOpsMessage, Pipeline

#: Pipeline name -> fixed?; and the inputs sink handled, by pipeline name.
FIXED: dict[str, bool] = {}
SEEN: dict[str, list[int]] = {}


def make_pipeline(name: str, url: str | None = None, heartbeat: float = 0.3) -> Pipeline:
    """Queues ``<name>.in`` and ``<name>.mid``; stages ``parse`` and ``sink``."""
    p = Pipeline(name, url=url, app_options={"heartbeat": heartbeat})
    p.queue("in", value=f"{name}.in")
    p.queue("mid", value=f"{name}.mid")
    seen = SEEN.setdefault(name, [])

    @p.stage(input="in", outputs=["mid"], replicas=2)
    async def parse(msg: MLOpsMessage) -> list[tuple[str, Any]]:
        return [("mid", msg)]

    @p.stage(input="mid", retries=0)
    async def sink(msg: MLOpsMessage) -> None:
        if msg.additional_arguments.get("poison") and not FIXED.get(name):
            raise ValueError(f"poisoned record {msg.additional_arguments['i']}")
        seen.append(msg.additional_arguments["i"])

    return p


pipeline = make_pipeline(os.environ.get("UI_PREFIX", "uit"), os.environ.get("UI_URL"),
                         float(os.environ.get("UI_HEARTBEAT", "0.3")))
