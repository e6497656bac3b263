from ..backends.conftest import (  # noqa: F401  the per-backend bus fixtures
    bus,
    confluent_bus,
    kafka_bus,
    postgres_bus,
    redis_bus,
)
