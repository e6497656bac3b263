"""The backend fixture: every test in tests/backends runs once per backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlops_async import Admin


@dataclass
class Bus:
    """How to reach one backend in a test, and its honest differences."""

    name: str
    url: str
    consumer_options: dict[str, Any] = field(default_factory=dict)
    producer_options: dict[str, Any] = field(default_factory=dict)
    # Seconds to wait for "nothing more arrives" checks: group joins are slow on Kafka.
    quiet: float = 0.3
    # Kafka moves whole partitions between members when the group changes; records a
    # member had not yet acknowledged are then read again (at-least-once, duplicates).
    rebalances: bool = False

    def topic(self) -> str:
        return f"{self.name}-t-{uuid.uuid4().hex[:10]}"

    def group(self) -> str:
        return f"{self.name}-g-{uuid.uuid4().hex[:10]}"

    async def create_topic(self, name: str, partitions: int = 1) -> None:
        async with Admin(self.url) as admin:
            await admin.create_topic(name, partitions=partitions)


BACKENDS = ["memory", "kafka", "confluent", "redis", "postgres"]


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield Bus("memory", f"memory://contract-{uuid.uuid4().hex[:8]}")
    else:  # each broker's fixture module supplies its own Bus
        yield request.getfixturevalue(f"{request.param}_bus")


# Tansu takes about 5 s to settle a group join; real Kafka about 3 s with these timings.
KAFKA_CONSUMER_OPTIONS = {
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 300,
    "rebalance_timeout_ms": 3_000,
}


@pytest.fixture
def kafka_bus(kafka_bootstrap: str) -> Bus:
    return Bus(
        "kafka",
        f"kafka://{kafka_bootstrap}",
        consumer_options=dict(KAFKA_CONSUMER_OPTIONS),
        quiet=7.0,
        rebalances=True,
    )


# librdkafka's JoinGroup carries session.timeout.ms, and Tansu settles a join after
# half of it (22 s with librdkafka's 45 s default): short sessions keep joins at ~2 s.
CONFLUENT_CONSUMER_OPTIONS = {
    "session.timeout.ms": 3_000,
    "heartbeat.interval.ms": 300,
}


@pytest.fixture
def confluent_bus(kafka_bootstrap: str) -> Bus:
    return Bus(
        "confluent",
        f"kafka+confluent://{kafka_bootstrap}",
        consumer_options=dict(CONFLUENT_CONSUMER_OPTIONS),
        quiet=5.0,
        rebalances=True,
    )


@pytest.fixture
def redis_bus(redis_url: str) -> Bus:
    return Bus("redis", redis_url, quiet=0.5)


@pytest.fixture
def postgres_bus(postgres_url: str) -> Bus:
    return Bus("postgres", postgres_url, quiet=0.5)
