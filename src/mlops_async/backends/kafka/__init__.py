"""Kafka, on two clients: ``kafka://`` (aiokafka, :mod:`.aio`) and ``kafka+confluent://``
(librdkafka through confluent-kafka, :mod:`.confluent`).

Importing this package imports neither client: each backend module imports its own
when the registry loads it, so a user with one client installed never needs the other.
"""

__all__: list[str] = []
