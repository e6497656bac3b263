"""mlops_async: an asyncio-native event bus for ML pipelines.

One Producer/Consumer API over an in-memory bus, Kafka and Redis::

    async with Producer("kafka://localhost:9092", topic="train") as producer:
        await producer.send(MessageBuilder().with_msg_type(MessageType.START).build())

    async with Consumer("kafka://localhost:9092", topic="train", group="trainers") as consumer:
        async for msg in consumer:
            ...
"""

from __future__ import annotations

from ._version import __version__
from .admin import Admin
from .app import App, AppFailed, OutputError, replay_dead_letters
from .backends import Backend, Delivery, Record, Subscription, register_backend
from .backends.base import GroupInfo, PartitionLag, TopicInfo
from .codec import Codec
from .consumer import Consumer
from .deadletter import DeadLetter
from .errors import (
    AuthenticationError,
    BusClosed,
    BusError,
    BusUnavailable,
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidMessage,
    MessageError,
    MessageTooLarge,
    MissingDependency,
    NotSupported,
    PublishError,
    SendTimeout,
    TooManyDeliveries,
)
from .message import MessageBuilder, MessageType, MLOpsMessage, Stage
from .pipeline import Pipeline
from .producer import Producer
from .queues import AppConfig, Queue, load_config
from .signals import Ack, Reject, Retry

__all__ = [
    "Ack",
    "Admin",
    "App",
    "AppConfig",
    "AppFailed",
    "AuthenticationError",
    "Backend",
    "BusClosed",
    "BusError",
    "BusUnavailable",
    "Codec",
    "ConfigurationError",
    "Consumer",
    "DeadLetter",
    "DecodeError",
    "Delivery",
    "EncodeError",
    "GroupInfo",
    "InvalidMessage",
    "MLOpsMessage",
    "MessageBuilder",
    "MessageError",
    "MessageTooLarge",
    "MessageType",
    "MissingDependency",
    "NotSupported",
    "OutputError",
    "PartitionLag",
    "Pipeline",
    "Producer",
    "PublishError",
    "Queue",
    "Record",
    "Reject",
    "Retry",
    "SendTimeout",
    "Stage",
    "Subscription",
    "TooManyDeliveries",
    "TopicInfo",
    "__version__",
    "load_config",
    "register_backend",
    "replay_dead_letters",
]
