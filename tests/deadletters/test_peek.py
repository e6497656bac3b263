"""Looking at a topic never writes to it, nor to its dead-letter queue.

A ``Consumer(url, topic="features", group="check")`` with the default schema
dead-letters every real ``Feature`` record into ``features.dlq`` (the consumer
takes them for bad input): production's dead letters, which `top` shows and
`dlq replay` re-sends. ``Consumer(..., peek=True)`` and ``mlops-async peek``
read without a group and never dead-letter.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from mlops_async import Admin, ConfigurationError, Consumer, MLOpsMessage, Producer
from mlops_async.cli import main

from ..backends.conftest import Bus


class Feature(msgspec.Struct):
    user: str
    doubled: float


async def _features(bus: Bus, topic: str, n: int) -> None:
    async with Producer(bus.url, topic=topic, schema=Feature, **bus.producer_options) as p:
        for i in range(n):
            await p.send(Feature(user=f"u{i}", doubled=2.0 * i))
        await p.flush(timeout=30)


async def _topics(bus: Bus) -> set[str]:
    async with Admin(bus.url) as admin:
        return {t.name for t in await admin.list_topics()}


async def test_a_peek_with_the_wrong_schema_dead_letters_nothing(bus: Bus) -> None:
    topic = bus.topic()
    await bus.create_topic(topic)
    await _features(bus, topic, 3)
    async with Consumer(bus.url, topic=topic, peek=True, **bus.consumer_options) as c:
        got = await c.get_messages(timeout=bus.quiet)
        assert got == [] and c.dead_lettered == 0 and c.skipped == 3
    assert f"{topic}.dlq" not in await _topics(bus)


async def test_a_peek_reads_from_the_start_and_moves_no_group(bus: Bus) -> None:
    topic, group = bus.topic(), bus.group()
    await bus.create_topic(topic)
    await _features(bus, topic, 3)
    async with Consumer(bus.url, topic=topic, peek=True, schema=Feature,
                        **bus.consumer_options) as c:
        seen: list[Feature] = []
        async with asyncio.timeout(20):
            while len(seen) < 3:
                seen += await c.get_messages(timeout=1)
    assert [f.user for f in seen] == ["u0", "u1", "u2"]
    # The stage's own group still finds all of it.
    async with Consumer(bus.url, topic=topic, group=group, schema=Feature,
                        **bus.consumer_options) as real:
        got: list[Feature] = []
        async with asyncio.timeout(20):
            while len(got) < 3:
                got += await real.get_messages(timeout=1)
    assert len(got) == 3


def test_peek_with_a_group_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="peek"):
        Consumer("memory://peek", topic="t", group="g", peek=True)


@pytest.mark.redis
def test_the_peek_command_prints_records_and_leaves_no_dead_letters(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = Bus("redis", redis_url)
    topic = bus.topic()
    asyncio.run(_features(bus, topic, 2))
    assert main(["peek", topic, "--url", redis_url, "--timeout", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    position, record = lines[0].split(None, 1)
    assert position.startswith("0@") and json.loads(record) == {"user": "u0", "doubled": 0.0}
    assert f"{topic}.dlq" not in asyncio.run(_topics(bus))


@pytest.mark.redis
def test_peek_and_dlq_commands_refuse_an_unknown_queue(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["peek", "nosuch-topic"], ["dlq", "list", "--queue", "nosuch.dlq"],
                 ["dlq", "replay", "--queue", "nosuch.dlq"]):
        assert main([*argv, "--url", redis_url]) == 2
        assert "no queue 'nosuch" in capsys.readouterr().err


async def test_peek_on_a_message_topic_shows_messages(bus: Bus) -> None:
    topic = bus.topic()
    await bus.create_topic(topic)
    from ..conftest import make_msg

    async with Producer(bus.url, topic=topic, **bus.producer_options) as p:
        await p.send(make_msg(7), flush=True)
    async with Consumer(bus.url, topic=topic, peek=True, **bus.consumer_options) as c:
        got: list[MLOpsMessage] = []
        async with asyncio.timeout(20):
            while not got:
                got = await c.get_messages(timeout=1)
    assert got[0].additional_arguments["i"] == 7
