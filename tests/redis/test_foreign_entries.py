"""Stream entries written by plain redis-py: foreign fields, bad headers, no value.

The consumer group never halts on an entry: good ones arrive, every other one
is dead-lettered with all of its fields and the reason, and is acknowledged
only after its dead letter is on the broker.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_async import Admin, Codec, Consumer, DeadLetter, MLOpsMessage
from mlops_async.backends.base import decode_headers, encode_headers

from ..conftest import make_msg
from .test_redis import name

pytestmark = pytest.mark.redis
CODEC: Codec[MLOpsMessage] = Codec()
Fields = dict[bytes, bytes]


def good(i: int) -> bytes:
    return CODEC.encode(make_msg(i))


def expected_ok(fields: Fields) -> bool:
    """Our envelope: a decodable ``v``, and ``h`` (if any) holding our headers."""
    if b"v" not in fields:
        return False
    try:
        CODEC.decode(fields[b"v"])
    except Exception:
        return False
    return b"h" not in fields or headers_ok(fields[b"h"])


def headers_ok(raw: bytes) -> bool:
    try:
        decode_headers(raw)
    except Exception:
        return False
    return True


async def write(url: str, topic: str, entries: list[Fields]) -> None:
    r = redis_py.Redis.from_url(url)
    try:
        for fields in entries:
            await r.xadd(f"mlops:{topic}", fields)  # type: ignore[arg-type]
    finally:
        await r.aclose()


async def drain(url: str, topic: str, group: str, entries: list[Fields]) -> list[MLOpsMessage]:
    goods = sum(expected_ok(f) for f in entries)
    bad = len(entries) - goods
    got: list[MLOpsMessage] = []
    async with Consumer(url, topic=topic, group=group, auto_offset_reset="earliest") as c:
        async with asyncio.timeout(30):
            while len(got) < goods or c.dead_lettered < bad:
                got.extend(await c.get_messages(timeout=0.2))
    return got


async def letters(url: str, topic: str, n: int) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    async with Consumer(url, topic=f"{topic}.dlq", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        async with asyncio.timeout(30):
            while len(out) < n:
                out.extend(await dlq.get_messages(timeout=0.2))
    return out


async def test_foreign_headers_field_does_not_halt_the_group(redis_url: str) -> None:
    topic, group = name("rf"), name("g")
    v = [good(i) for i in range(4)]
    entries: list[Fields] = [
        {b"v": v[0]},
        {b"v": v[1], b"h": b"not-headers"},  # the reproduced halt
        {b"a": b"1", b"b": b"2"},  # several fields, no value
        {b"v": v[2], b"trace": b"abc"},  # a field we do not know: ignored
        {b"v": v[3], b"k": b"key", b"h": encode_headers((("x", b"y"),))},
    ]
    await write(redis_url, topic, entries)
    got = await drain(redis_url, topic, group, entries)
    assert sorted(m.additional_arguments["i"] for m in got) == [0, 2, 3]
    dead = await letters(redis_url, topic, 2)
    by_reason = {x.error_type: x for x in dead}
    assert set(by_reason) == {"DecodeError"}
    fields = sorted(tuple(map(tuple, x.fields or ())) for x in dead)
    # The dead letters carry every raw field: nothing of the entry is lost.
    assert fields == sorted([((b"v", v[1]), (b"h", b"not-headers")),
                             ((b"a", b"1"), (b"b", b"2"))])
    assert any("'h'" in x.error for x in dead) and any("no 'v'" in x.error for x in dead)
    # Everything was acknowledged: nothing is left pending for the group.
    async with Admin(redis_url) as admin:
        lag = await admin.group_lag(group)
    assert sum(p.pending for p in lag) == 0


entry_fields = st.one_of(
    st.integers(0, 10_000).map(lambda i: {b"v": good(i)}),
    st.builds(lambda i, h: {b"v": good(i), b"h": h}, st.integers(0, 10_000),
              st.binary(max_size=30)),
    st.builds(lambda i, k: {b"v": good(i), b"k": k}, st.integers(0, 10_000),
              st.binary(max_size=30)),
    st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=50),
                    min_size=1, max_size=4),
    st.builds(lambda v: {b"v": v}, st.binary(max_size=100)),
)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entries=st.lists(entry_fields, min_size=1, max_size=30))
def test_any_foreign_entry_arrives_or_is_dead_lettered_whole(
    redis_url: str, entries: list[Fields]
) -> None:
    async def scenario() -> None:
        topic, group = name("rh"), name("g")
        await write(redis_url, topic, entries)
        got = await drain(redis_url, topic, group, entries)
        assert Counter(m.additional_arguments["i"] for m in got) == Counter(
            CODEC.decode(f[b"v"]).additional_arguments["i"] for f in entries if expected_ok(f))
        bad = [f for f in entries if not expected_ok(f)]
        dead = await letters(redis_url, topic, len(bad))
        # A bad value in our envelope is carried as ``original`` (and key); a bad
        # envelope with every field the entry had.
        def seen(x: DeadLetter) -> frozenset[tuple[bytes, bytes]]:
            if x.fields:
                return frozenset(x.fields)
            return frozenset({(b"v", x.original)} | ({(b"k", x.key)} if x.key is not None
                                                      else set()))

        def sent(f: Fields) -> frozenset[tuple[bytes, bytes]]:
            if b"v" not in f or (b"h" in f and not headers_ok(f[b"h"])):
                return frozenset(f.items())
            return frozenset((k, v) for k, v in f.items() if k in (b"v", b"k"))

        assert Counter(map(seen, dead)) == Counter(map(sent, bad))

    asyncio.run(scenario())


async def test_the_connector_records_read_write_delete_times(redis_url: str) -> None:
    from prometheus_client import REGISTRY

    from mlops_async import Producer

    def count(op: str) -> float:
        return REGISTRY.get_sample_value("redis_process_time_seconds_count",
                                         {"operation": op}) or 0.0

    before = {op: count(op) for op in ("read", "write", "delete")}
    topic, group = name("rm"), name("g")
    async with Producer(redis_url, topic=topic) as p:
        await p.send(make_msg(1), flush=True)
    async with Consumer(redis_url, topic=topic, group=group, auto_offset_reset="earliest",
                        commit="manual") as c:
        got: list[MLOpsMessage] = []
        while not got:
            got = await c.get_messages(timeout=0.2)
        await c.commit()
    assert all(count(op) > before[op] for op in ("read", "write", "delete"))
