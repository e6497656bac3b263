"""The wire-format page (docs/wire-format.md) and its JSON Schema hold for what the
library really writes and reads."""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from mlops_async import (
    Consumer,
    DeadLetter,
    MessageBuilder,
    MessageType,
    MLOpsMessage,
    Producer,
)
from mlops_async.backends import Record
from mlops_async.codec import DEFAULT_MAX_SIZE, Codec

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "wire-format.schema.json").read_text())
PY_TYPES = {"str": str, "float64": float, "map": dict, "bin": bytes, "int": int,
            "bool": bool, "array": list}


def validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema = SCHEMA if definition is None else {**SCHEMA, "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema)


def json_view(value: Any) -> Any:
    """A decoded msgpack value as its JSON encoding shows it (bin as base64)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list | tuple):
        return [json_view(v) for v in value]
    if isinstance(value, dict):
        return {k: json_view(v) for k, v in value.items()}
    return value


def check_msgpack_types(fields: dict[str, Any], definition: str) -> None:
    props = SCHEMA["$defs"][definition]["properties"]
    for name, value in fields.items():
        spec = props[name]
        kind = spec.get("x-msgpack") or SCHEMA["$defs"]["MessageType"]["x-msgpack"]
        if value is not None:
            assert type(value) is PY_TYPES[kind], (name, value, kind)


def full_message() -> MLOpsMessage:
    return (MessageBuilder().with_msg_type(MessageType.DATA).with_creator_type("ETL")
            .with_creator("etl-1").with_user_msg("hé").with_next_task("TRAIN")
            .with_stage("ETL").with_correlation_id("run-1")
            .with_additional_arguments({"i": 1, "f": 0.5, "b": b"\x00", "l": [1, None],
                                        "m": {"ok": True}})
            .build())


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("msg", [
    full_message(),
    MessageBuilder().with_msg_type(MessageType.START).build(),
    msgspec.structs.replace(full_message(), topic="forwarded"),
], ids=["full", "minimal", "forwarded"])
def test_library_messages_match_the_schema_and_msgpack_types(msg: MLOpsMessage) -> None:
    value = Codec().encode(msg)
    assert value[0] == 0x01
    fields = msgspec.msgpack.decode(value[1:])
    validator().validate(json_view(fields))
    check_msgpack_types(fields, "MLOpsMessage")
    assert b"\xaacreated_at\xcb" in value  # created_at is a float 64
    assert set(fields) >= {"id", "created_at", "msg_type"}
    assert None not in fields.values()  # unset fields are omitted
    as_json = Codec(format="json").encode(msg)
    assert as_json[0] == 0x02
    validator().validate(json.loads(as_json[1:]))


def test_the_hex_listing_on_the_page_is_what_the_library_writes() -> None:
    page = (DOCS / "wire-format.md").read_text()
    block = page.split("A minimal message", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    tokens: list[str] = []
    for line in block.splitlines():  # hex bytes, then a comment
        for token in line.split():
            if not re.fullmatch(r"[0-9a-f]{2}", token):
                break
            tokens.append(token)
    listed = bytes.fromhex("".join(tokens))
    msg = MLOpsMessage(id="0af3", created_at=1765000000.25, msg_type="DATA", creator="etl")
    assert listed == Codec().encode(msg)
    assert len(listed) == 56


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The page's formula, written from it."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    n = len(key) & ~3
    for (k,) in struct.iter_unpack("<I", key[:n]):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = key[n:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_keys_go_to_the_partition_of_the_pages_formula() -> None:
    partitioner = DefaultPartitioner()  # what the kafka:// backend uses
    for n in (1, 3, 7, 12):
        parts = list(range(n))
        for i in range(200):
            key = f"user-{i}".encode() * (i % 4 + 1)
            assert partitioner(key, parts, parts) == murmur2_partition(key, n)


Letter = tuple[DeadLetter, dict[str, bytes], bytes]


async def read_raw(values: list[bytes | None], **consumer: Any
                   ) -> tuple[list[MLOpsMessage], list[Letter], int]:
    """Publish raw values on a fresh memory bus; what a Consumer reads, dead-letters, skips."""
    url = f"memory://wire-{uuid.uuid4().hex[:8]}"
    async with Producer(url, topic="t") as p:
        assert p.backend is not None
        await p.backend.publish([Record("t", v, b"key-1", (("h", b"1"),)) for v in values])
    async with Consumer(url, topic="t", group="g", auto_offset_reset="earliest",
                        **consumer) as c:
        msgs = await c.get_messages(timeout=0.3)
        tombstones = c.tombstones
    letters: list[Letter] = []
    async with Consumer(url, topic="t.dlq", group="g", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        for letter in await dlq.get_messages(timeout=0.3):
            d = dlq.envelopes[len(letters)]
            assert d.value is not None
            letters.append((letter, dict(d.headers or ()), bytes(d.value)))
    return msgs, letters, tombstones


def v1(fields: Any) -> bytes:
    return b"\x01" + msgspec.msgpack.encode(fields)


BASE = {"id": "a1", "created_at": 1765000000.5, "msg_type": "DATA"}


async def test_reading_rules_of_the_page() -> None:
    values = [
        v1(BASE),                                               # 0 minimal
        v1({**BASE, "created_at": 1765000000}),                 # 1 int created_at
        v1({**BASE, "user_message": None, "stage": None}),      # 2 nil optionals
        v1({**BASE, "msg_type": "PAUSE"}),                      # 3 unknown type
        v1({**BASE, "future_field": [1, 2]}),                   # 4 unknown field
        v1({**BASE, "topic": "elsewhere"}),                     # 5 topic on the wire
        b'{"id": "j1", "created_at": 1.5, "msg_type": "INFO"}', # 6 bare JSON
        b"\x02" + json.dumps(BASE).encode(),                    # 7 JSON envelope
        v1({"created_at": 1.0, "msg_type": "DATA"}),            # x missing id
        v1({**BASE, "id": None}),                               # x nil required
        v1({**BASE, "id": b"a1"}),                              # x bin for str
        v1({**BASE, "additional_arguments": {1: 2}}),           # x non-str key
        v1(["a1", 1.0, "DATA"]),                                # x not a map
        b"",                                                    # x empty value
        b"\x03" + msgspec.msgpack.encode(BASE),                 # x unknown marker
        None,                                                   # tombstone: skipped
    ]
    msgs, letters, tombstones = await read_raw(values)
    assert [m.id for m in msgs] == ["a1"] * 6 + ["j1", "a1"]
    assert msgs[1].created_at == 1765000000.0
    assert msgs[2].user_message is None
    assert msgs[3].msg_type == "PAUSE"
    assert Codec().encode(msgs[3]).count(b"PAUSE") == 1  # sent on unchanged
    assert {m.topic for m in msgs} == {"t"}               # set by the consumer
    assert tombstones == 1
    assert len(letters) == 7
    assert [letter.original for letter, _, _ in letters] == values[8:15]
    assert all(letter.error_type == "DecodeError" for letter, _, _ in letters)
    assert "empty payload" in letters[5][0].error
    assert "unknown format marker 0x03" in letters[6][0].error


async def test_dead_letters_match_the_schema_and_headers_of_the_page() -> None:
    oversize = b"\x01" + b"\xc0" * DEFAULT_MAX_SIZE   # one byte over: the marker counts
    at_limit = v1({**BASE, "user_message": "x" * (DEFAULT_MAX_SIZE - 100)})
    at_limit = at_limit[:1] + v1({**BASE, "user_message": "x" * (
        DEFAULT_MAX_SIZE - len(at_limit) + DEFAULT_MAX_SIZE - 100)})[1:]
    assert len(at_limit) == DEFAULT_MAX_SIZE
    msgs, letters, _ = await read_raw([b"junk", oversize, at_limit])
    assert len(msgs) == 1
    assert [letter.error_type for letter, _, _ in letters] == ["DecodeError", "MessageTooLarge"]
    for letter, headers, value in letters:
        assert value[0] == 0x01
        fields = msgspec.msgpack.decode(value[1:])
        validator("DeadLetter").validate(json_view(fields))
        check_msgpack_types(fields, "DeadLetter")
        assert "attempts" not in fields  # 1: omitted, the header carries it
        assert isinstance(fields["offset"], str)
        assert letter.key == b"key-1" and letter.headers == [("h", b"1")]
        assert headers["x-attempts"] == b"1"
        assert headers["x-source-topic"] == b"t"
        assert headers["x-source-position"] == f"t[0]@{letter.offset}".encode()
        assert headers["x-error-type"] == letter.error_type.encode()
        assert headers["x-handler"] == b""
        assert float(headers["x-failed-at"]) == letter.failed_at > 0
        assert set(headers) == {"x-error-type", "x-error", "x-source-topic",
                                "x-source-position", "x-attempts", "x-handler",
                                "x-failed-at"}


@pytest.mark.redis
async def test_redis_entries_are_laid_out_as_the_page_says(
        redis_url: str, unique: Callable[[str], str]) -> None:
    import redis.asyncio as redis

    topic = unique("layout")
    msg = full_message()
    async with Producer(redis_url, topic=topic) as p:
        await p.send(msg)
        await p.send(msg, key="user-1", headers={"trace": "t1", "b": b"\xff"})
        await p.flush()
    client = redis.from_url(redis_url)
    try:
        entries = await client.xrange(f"mlops:{topic}")
        first, second = (list(fields.items()) for _, fields in entries)
        assert first == [(b"v", Codec().encode(msg))]
        assert [k for k, _ in second] == [b"v", b"k", b"h"]
        assert second[1][1] == b"user-1"
        assert msgspec.msgpack.decode(second[2][1]) == [["trace", b"t1"], ["b", b"\xff"]]
        validator("RedisHeaders").validate(json_view(msgspec.msgpack.decode(second[2][1])))
        # h with str values (not bin) is not ours: the entry is dead-lettered whole.
        await client.xadd(f"mlops:{topic}", {"v": Codec().encode(msg),
                                             "h": msgspec.msgpack.encode([["a", "str"]])})
    finally:
        await client.aclose()
    async with Consumer(redis_url, topic=topic, group="g", auto_offset_reset="earliest") as c:
        got: list[MLOpsMessage] = []
        for _ in range(20):
            got += await c.get_messages(timeout=0.2)
            if len(got) == 2 and c.dead_lettered == 1:
                break
        assert len(got) == 2 and c.dead_lettered == 1
    async with Consumer(redis_url, topic=f"{topic}.dlq", group="g", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        [letter] = await dlq.get_messages(timeout=2)
    assert letter.original == b"" and letter.fields is not None
    assert [name for name, _ in letter.fields] == [b"v", b"h"]
    assert "-" in (letter.offset or "")  # a Redis entry id, as a string
    fields = msgspec.msgpack.decode(Codec(DeadLetter).encode(letter)[1:])
    fields.pop("topic", None)
    validator("DeadLetter").validate(json_view(fields))
