from __future__ import annotations

import sys

import pytest

from mlops_async import ConfigurationError, MissingDependency, Producer
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
    monkeypatch.delitem(sys.modules, "mlops_async.backends.kafka", raising=False)
    with pytest.raises(MissingDependency, match=r"mlops-async\[kafka\]"):
        create_backend("kafka://localhost:9092")


def test_register_backend() -> None:
    register_backend("mybus", MemoryBackend.from_url)
    be = create_backend("mybus://named")
    assert isinstance(be, MemoryBackend) and be.name == "named"


async def test_memory_rejects_client_options() -> None:
    with pytest.raises(ConfigurationError, match="acks"):
        await Producer("memory://x", topic="t", acks="all").start()
