"""Broker options: what each broker page shows, built against a real broker by the tests."""

from __future__ import annotations

from mlops_async import Consumer, Producer


def kafka_clients(bootstrap: str, topic: str = "train",
        group: str = "trainers") -> tuple[Producer, Consumer]:
    # --8<-- [start:kafka]
    producer = Producer(f"kafka://{bootstrap}", topic=topic,
                        acks="all", compression_type="gzip", linger_ms=5)
    consumer = Consumer(f"kafka://{bootstrap}", topic=topic, group=group,
                        max_poll_interval_ms=900_000,    # handlers that take up to 15 min
                        session_timeout_ms=10_000)
    # --8<-- [end:kafka]
    return producer, consumer


def confluent_clients(bootstrap: str, topic: str = "train",
        group: str = "trainers") -> tuple[Producer, Consumer]:
    # --8<-- [start:confluent]
    producer = Producer(f"kafka+confluent://{bootstrap}", topic=topic)
    consumer = Consumer(f"kafka+confluent://{bootstrap}", topic=topic, group=group,
                        partition_assignment_strategy="cooperative-sticky",
                        group_instance_id="worker-3",   # stable per replica (the pod name)
                        **{"session.timeout.ms": 6000})  # librdkafka's own names work too
    # --8<-- [end:confluent]
    return producer, consumer


def redis_clients(url: str, topic: str = "train",
        group: str = "trainers") -> tuple[Producer, Consumer]:
    # --8<-- [start:redis]
    producer = Producer(url, topic=topic, maxlen=100_000)      # stream trimmed to ~100k
    consumer = Consumer(url, topic=topic, group=group,
                        prefetch=500, claim_idle_ms=30_000, max_deliveries=5)
    # --8<-- [end:redis]
    return producer, consumer


def postgres_clients(url: str, topic: str = "train",
        group: str = "trainers") -> tuple[Producer, Consumer]:
    # --8<-- [start:postgres]
    producer = Producer(url, topic=topic)          # postgresql://user:password@host/db
    consumer = Consumer(url, topic=topic, group=group)
    # --8<-- [end:postgres]
    return producer, consumer
