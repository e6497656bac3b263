"""An App stopped with stop() starts again with start(): its pumps and workers run anew."""

from __future__ import annotations

import uuid

from mlops_async import App

from .models import Feature, RawEvent
from .test_app import read, send


def _app(url: str) -> App:
    app = App("restart", url=url, heartbeat=None)
    app.queue("raw", schema="tests.engine.models:RawEvent")
    app.queue("features", schema="tests.engine.models:Feature")

    @app.handler(input="raw", outputs=["features"])
    async def double(e: RawEvent) -> list[tuple[str, Feature]]:
        return [("features", Feature(user=e.user, doubled=e.value * 2))]

    return app


async def test_an_app_started_after_stop_handles_input_again() -> None:
    url = f"memory://restart-{uuid.uuid4().hex[:8]}"
    app = _app(url)
    await app.start()
    await send(url, "raw", [RawEvent(user="a", value=1.0)])
    assert [f.user for f in await read(url, "features", Feature, 1)] == ["a"]
    await app.stop()
    assert app.health()[0] is False

    await app.start()
    assert app.health()[0] is True
    await send(url, "raw", [RawEvent(user="b", value=2.0)])
    got = await read(url, "features", Feature, 2)
    assert sorted(f.user for f in got) == ["a", "b"]
    await app.stop()
    await app.stop()  # still safe twice


async def test_run_after_stop_runs_again() -> None:
    url = f"memory://restart-{uuid.uuid4().hex[:8]}"
    app = _app(url)
    await app.start()
    await app.stop()
    await app.start()
    ok, detail = app.health()
    assert ok, detail
    await app.stop()
