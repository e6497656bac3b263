"""The broker pages' examples, run against the suite's real brokers."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from mlops_async import Consumer, MessageBuilder, MessageType, Producer

from ._load import load


def options() -> ModuleType:
    """The module of the broker pages' client examples."""
    return load("brokers/options.py")


async def open_and_send(producer: Producer, consumer: Consumer) -> None:
    """The clients the page builds open against the broker, and the producer delivers."""
    async with producer, consumer:
        await producer.send(MessageBuilder().with_msg_type(MessageType.INFO).build(), flush=True)
        assert producer.stats()["sent"] >= 1


@pytest.mark.kafka
async def test_tour_and_options_on_kafka(
        kafka_bootstrap: str, unique: Callable[[str], str]) -> None:
    got = await load("getting_started/tour.py").tour(f"kafka://{kafka_bootstrap}",
                                                      unique("tour"), unique("g"))
    assert [m.user_message for m in got] == ["Hello World"] * 3
    await open_and_send(*options().kafka_clients(kafka_bootstrap, unique("opt"), unique("g")))


@pytest.mark.kafka
async def test_options_on_kafka_confluent(
        kafka_bootstrap: str, unique: Callable[[str], str]) -> None:
    await open_and_send(*options().confluent_clients(kafka_bootstrap, unique("opt"), unique("g")))


@pytest.mark.redis
async def test_tour_and_options_on_redis(redis_url: str, unique: Callable[[str], str]) -> None:
    got = await load("getting_started/tour.py").tour(redis_url, unique("tour"), unique("g"))
    assert [m.user_message for m in got] == ["Hello World"] * 3
    await open_and_send(*options().redis_clients(redis_url, unique("opt"), unique("g")))


async def test_tour_and_options_on_postgres(
        postgres_url: str, unique: Callable[[str], str]) -> None:
    got = await load("getting_started/tour.py").tour(postgres_url, unique("tour"), unique("g"))
    assert [m.user_message for m in got] == ["Hello World"] * 3
    await open_and_send(*options().postgres_clients(postgres_url, unique("opt"), unique("g")))


@pytest.mark.redis
async def test_dead_letter_example_on_redis(redis_url: str) -> None:
    letters = await load("concepts/dead_letters.py").dead_letters(redis_url)
    assert {x.error_type for x in letters} >= {"DecodeError", "MessageTooLarge"}
