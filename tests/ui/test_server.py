"""The page's HTTP server: assets from the package, the event stream, the dead-letter calls."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from mlops_async import Producer
from mlops_async.backends import Record
from mlops_async.cli import main
from mlops_async.ui import serve_ui

from .uipipe import pipeline


async def request(port: int, method: str, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(head.encode() + b"\r\n" + body)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    hs = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), hs, payload


async def test_the_page_and_its_assets_come_from_the_package() -> None:
    server = await serve_ui("memory://ui-assets", port=0)
    try:
        status, hs, page = await request(server.port, "GET", "/")
        assert status == 200 and hs["Content-Type"].startswith("text/html")
        for src in (b"/static/app.js", b"/static/style.css", b"/static/favicon.svg"):
            assert src in page
            status, _, data = await request(server.port, "GET", src.decode())
            assert status == 200 and data
        assert b"http" not in page.replace(b"http://www.w3.org", b"")  # no CDN, no outside asset
        assert (await request(server.port, "GET", "/static/../../secret"))[0] == 404
        assert (await request(server.port, "GET", "/nothing"))[0] == 404
        assert (await request(server.port, "DELETE", "/"))[0] == 405
        assert (await request(server.port, "GET", "/api/dlq"))[0] == 400
    finally:
        await server.close()
        await server.close()


async def test_events_stream_snapshots_and_stop_polling_when_the_page_leaves() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    server = await serve_ui(url, pipeline, port=0, interval=0.2)
    try:
        assert server.watch.polls == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"text/event-stream" in head
        snaps: list[dict[str, Any]] = []
        while len(snaps) < 2:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.startswith(b"data: "):
                snaps.append(json.loads(line[6:]))
        assert set(snaps[0]["stages"]) == {"parse", "sink"}
        assert snaps[1]["at"] > snaps[0]["at"]
        writer.close()
        await writer.wait_closed()
        for _ in range(50):  # the server notices at its next write
            if not server.watch._listeners:
                break
            await asyncio.sleep(0.1)
        polls = server.watch.polls
        await asyncio.sleep(0.6)
        assert server.watch.polls == polls
        status, _, body = await request(server.port, "GET", "/api/snapshot")
        assert status == 200 and json.loads(body)["declared"] is True
    finally:
        await server.close()


async def test_replay_needs_the_pages_header_and_a_dead_letter_topic() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    server = await serve_ui(url, pipeline, port=0)
    try:
        async with Producer(url, topic="uit.in") as p:  # a record nobody can decode...
            assert p.backend is not None
            await p.backend.publish([Record("uit.in", b"\x01junk")])
        from mlops_async import Consumer

        async with Consumer(url, topic="uit.in", group="g", auto_offset_reset="earliest") as c:
            assert await c.get_messages(timeout=0.5) == []  # ...is dead-lettered
        body = json.dumps({"topic": "uit.in.dlq", "limit": None}).encode()
        assert (await request(server.port, "POST", "/api/replay", body))[0] == 403
        ok = {"X-Requested-With": "mlops-async"}
        bad = json.dumps({"topic": "uit.in"}).encode()
        assert (await request(server.port, "POST", "/api/replay", bad, ok))[0] == 400
        assert (await request(server.port, "POST", "/api/replay", b"{", ok))[0] == 400
        status, _, data = await request(server.port, "GET", "/api/dlq?topic=uit.in.dlq")
        assert status == 200 and json.loads(data)["waiting"] == 1
        status, _, data = await request(server.port, "POST", "/api/replay", body, ok)
        assert status == 200 and json.loads(data) == {"topic": "uit.in.dlq", "replayed": 1}
        status, _, data = await request(server.port, "GET", "/api/dlq?topic=uit.in.dlq")
        assert json.loads(data)["waiting"] == 0
    finally:
        await server.close()


def test_the_command_needs_a_bus_or_the_demo(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_BUS_URL", raising=False)
    assert main(["ui"]) == 2
    assert "ui needs a bus" in capsys.readouterr().err
    assert main(["ui", "--demo", "tests.ui.uipipe:pipeline"]) == 2
    assert "give no module" in capsys.readouterr().err
