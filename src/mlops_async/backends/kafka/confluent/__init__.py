"""``kafka+confluent://``: Kafka through librdkafka (confluent-kafka).

The client's blocking calls run on threads it owns (:mod:`.thread`); :mod:`.backend`
publishes, :mod:`.consumer` subscribes, :mod:`.admin` manages topics and groups,
:mod:`.options` maps our options to librdkafka's and :mod:`.errors` its errors to ours.
"""

from .backend import ConfluentBackend

__all__ = ["ConfluentBackend"]
