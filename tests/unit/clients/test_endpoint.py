from __future__ import annotations

import sys

import pytest

from mlops_async import Admin, ConfigurationError, Consumer, MissingDependency, Producer
from mlops_async.backends import create_backend, register_backend
from mlops_async.backends.memory import MemoryBackend
from mlops_async.endpoint import resolve_url, seed_url


async def test_order_of_resolution(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLOPS_BUS_URL", "redis://envhost:6379/0")
    assert await resolve_url("kafka://a:1", "redis", "b:2") == "kafka://a:1"
    assert await resolve_url(None, "kafka", "b:9092") == "kafka://b:9092"
    assert await resolve_url(None) == "redis://envhost:6379/0"
    monkeypatch.delenv("MLOPS_BUS_URL")
    monkeypatch.setenv("MLOPS_BUS_PROBE", "0")
    assert await resolve_url(None) == "memory://default"
    assert "in-memory bus" in caplog.text and "MLOPS_BUS_URL" in caplog.text


def test_seed_urls() -> None:
    assert seed_url("kafka", None) == "kafka://kafka:9092"
    assert seed_url("Kafka", "k1:9092,k2:9092") == "kafka://k1:9092,k2:9092"
    assert seed_url("memory", "bus1") == "memory://bus1"
    assert seed_url("redis", "r:6379/2") == "redis://r:6379/2"
    with pytest.raises(ConfigurationError):
        seed_url("no such thing!", None)


def test_unknown_scheme_and_bad_url() -> None:
    with pytest.raises(ConfigurationError, match="known: "):
        create_backend("carrier-pigeon://x")
    with pytest.raises(ConfigurationError, match="not a bus URL"):
        create_backend("localhost:9092")


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiokafka", None)
    monkeypatch.delitem(sys.modules, "mlops_async.backends.kafka.aio", raising=False)
    with pytest.raises(MissingDependency, match=r"mlops-async\[kafka\]"):
        create_backend("kafka://localhost:9092")


def test_register_backend() -> None:
    register_backend("mybus", MemoryBackend.from_url)
    be = create_backend("mybus://named")
    assert isinstance(be, MemoryBackend) and be.name == "named"


async def test_memory_ignores_kafka_options_with_one_warning_and_rejects_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Seed code written for Kafka that fell back to the in-memory bus runs unchanged.
    p: Producer = Producer("memory://x", topic="t", acks="all", max_request_size=1 << 20)
    await p.start()
    await p.close()
    warned = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert len(warned) == 1 and "acks" in warned[0] and "max_request_size" in warned[0]
    with pytest.raises(ConfigurationError, match="retention_ms"):
        Producer("memory://x", topic="t", retention_ms=5)  # at construction, not start


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "kafka://127.0.0.1:1",
                                 "postgresql://u@127.0.0.1:1/db", "memory://x"])
def test_unknown_options_fail_at_construction_naming_the_closest(url: str) -> None:
    with pytest.raises(ConfigurationError, match="claim_timeout"):
        Consumer(url, topic="t", group="g", claim_timeout=0.5)
    with pytest.raises(ConfigurationError, match="nope"):
        Admin(url, nope=1)


def test_a_misspelled_redis_option_names_the_right_one() -> None:
    with pytest.raises(ConfigurationError, match="did you mean claim_idle_ms"):
        Consumer("redis://127.0.0.1:1/0", topic="t", group="g", claim_idle=100)


def test_the_seeds_positional_endpoint_and_orchestrator() -> None:
    c: Consumer = Consumer("kafka:9092", "kafka", topic=["a", "b"], group_id="g")
    assert c._url is None and c._endpoint == "kafka:9092" and c._orchestrator == "kafka"
    assert c.group == "g" and c.get_subscriptions() == ["a", "b"]
    p: Producer = Producer("localhost:9092", "kafka", topic="t", max_block_ms=2500)
    assert p._send_timeout == 2.5
