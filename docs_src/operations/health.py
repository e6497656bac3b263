"""Liveness and readiness of an app, as the Kubernetes probes read them."""

from __future__ import annotations

import asyncio

from mlops_async import App, MLOpsMessage

app = App("health_demo", url="memory://health")


@app.handler(input="jobs")
async def work(msg: MLOpsMessage) -> None:
    pass


async def probe() -> tuple[bool, bool]:
    # --8<-- [start:probe]
    async with app:
        alive, detail = app.health()        # every pump and worker runs
        ready, _ = app.readiness()          # also connected and subscribed
        print(alive, ready, detail)
    # --8<-- [end:probe]
    return alive, ready


if __name__ == "__main__":
    asyncio.run(probe())
