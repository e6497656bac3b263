"""Runs tests/interop/node/wire.mjs (a Node.js producer and consumer written from the
wire-format page alone) and shapes records the way it reads and writes them."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed for the interop tests: ./scripts/test installs it "
                    "(apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"npm packages missing: run npm ci --prefix {NODE_DIR} (./scripts/test does)")
    return node


async def node(*args: str, stdin: Any = None, timeout: float = 60) -> Any:
    """Run one wire.mjs command; its JSON output, if any."""
    proc = await asyncio.create_subprocess_exec(
        node_binary(), str(NODE_DIR / "wire.mjs"), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    data = None if stdin is None else json.dumps(stdin).encode()
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"node wire.mjs {args[0]} failed: {err.decode()[-3000:]}"
    return json.loads(out) if out.strip() else None


def as_json(value: Any) -> Any:
    """A decoded msgpack value in the JSON shape wire.mjs uses (bytes as {"$bin": b64})."""
    if isinstance(value, bytes):
        return {"$bin": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def envelope_fields(value: bytes) -> Any:
    """The envelope's fields as written, in wire.mjs's JSON shape."""
    assert value[0] == 0x01
    return as_json(msgspec.msgpack.decode(value[1:]))


def node_records(n_keyed: int = 20) -> list[dict[str, Any]]:
    """What the Node producer sends: every field, nil optionals, an unknown type, keys."""
    full = {
        "id": "node-0001", "created_at": 1765000000.25, "msg_type": "DATA",
        "creator_type": "ETL", "creator": "node-etl", "user_message": "héllo from node",
        "next_task": "TRAIN", "stage": "ETL", "correlation_id": "run-7",
        "additional_arguments": {
            "i": 42, "f": 2.5, "s": "text", "t": True, "none": None,
            "bin": {"$bin": base64.b64encode(b"\x00\xff\x10").decode()},
            "list": [1, "two", 3.5, None], "map": {"nested": {"deep": [1, 2]}},
        },
    }
    records: list[dict[str, Any]] = [
        {"key": "user-42", "headers": [["trace", "abc"], ["source", "node"]], "message": full},
        {"key": None, "headers": [], "message": {
            "id": "node-0002", "created_at": 1765000001.5, "msg_type": "START",
            "user_message": None, "creator": None}},
        {"key": None, "headers": [], "message": {
            "id": "node-0003", "created_at": 1765000002.75, "msg_type": "PAUSE"}},
    ]
    records += [{"key": f"key-{i}", "headers": [], "message": {
        "id": f"node-k{i}", "created_at": 1765000003.5 + i, "msg_type": "DATA",
        "additional_arguments": {"i": i}}} for i in range(n_keyed)]
    return records
