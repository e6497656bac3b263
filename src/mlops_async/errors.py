"""The exceptions mlops_async raises.

Every error the library raises derives from :class:`BusError`; driver errors
(aiokafka, redis-py) are translated at the backend boundary and chained as
``__cause__``, so callers never need to import a driver to catch a failure::

    BusError                      retriable: bool says whether trying again may help
    ├── BusUnavailable            the broker cannot be reached (retriable)
    ├── AuthenticationError       the broker refused the credentials (not retriable)
    ├── BusClosed                 the producer/consumer was closed
    ├── SendTimeout               the send buffer stayed full past the timeout (retriable)
    ├── PublishError              the broker refused records for good
    ├── ConfigurationError        a bad URL, option or missing extra (also a ValueError)
    │   └── MissingDependency     the URL needs an optional extra that is not installed
    ├── NotSupported              this backend cannot do that operation
    ├── WrongEventLoop            a client used from an event loop other than its own
    └── MessageError              something is wrong with one message
        ├── InvalidMessage        MessageBuilder.build() found a required field unset
        ├── MessageTooLarge       the payload is over the configured size limit
        ├── EncodeError           the message could not be serialised
        ├── TooManyDeliveries     handed out more than max_deliveries times, never acknowledged
        └── DecodeError           bytes that are not a valid message of the schema
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BusClosed",
    "BusError",
    "BusUnavailable",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "InvalidMessage",
    "MessageError",
    "MessageTooLarge",
    "MissingDependency",
    "NotSupported",
    "PublishError",
    "SendTimeout",
    "TooManyDeliveries",
    "WrongEventLoop",
]


class BusError(Exception):
    """Base class of every mlops_async error."""

    retriable: bool = False


class BusUnavailable(BusError):
    """The broker cannot be reached right now."""

    retriable = True


class AuthenticationError(BusError):
    """The broker refused the credentials (or the mechanism): retrying will not help.

    Its text names the broker with any password redacted.
    """


class BusClosed(BusError):
    """The producer, consumer or admin was already closed."""


class SendTimeout(BusError):
    """``send`` waited for buffer space longer than its timeout."""

    retriable = True


class PublishError(BusError):
    """The broker refused records and retrying will not help."""


class ConfigurationError(BusError, ValueError):
    """A URL, option or combination of options is not valid."""


class MissingDependency(ConfigurationError, ImportError):
    """The chosen backend needs an optional extra that is not installed."""


class NotSupported(BusError):
    """The backend cannot perform this operation."""


class WrongEventLoop(BusError):
    """A Producer, Consumer or Admin was used from an event loop other than the one it
    started on (its connections and tasks live on that one). Start it, use it and close
    it inside one loop: one ``asyncio.run()`` for the whole program."""


class MessageError(BusError):
    """Something is wrong with one message; the ones around it are unaffected."""


class InvalidMessage(MessageError, ValueError):
    """A message could not be built: a required field is missing or wrong."""


class MessageTooLarge(MessageError):
    """A payload is larger than the configured limit."""

    def __init__(self, size: int, limit: int, where: str = "") -> None:
        self.delivery: object = None  # set by the Consumer when it came from a delivery
        self.size = size
        self.limit = limit
        self.where = where
        at = f" ({where})" if where else ""
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes{at}")


class TooManyDeliveries(MessageError):
    """A message was handed out more than ``max_deliveries`` times and never acknowledged."""


class EncodeError(MessageError):
    """A message could not be serialised."""


class DecodeError(MessageError):
    """Bytes that are not a valid message of the expected schema.

    ``payload`` keeps the raw bytes; ``where`` says where they came from
    (topic/partition/offset) when that is known.
    """

    def __init__(self, reason: str, payload: bytes = b"", where: str = "") -> None:
        self.delivery: object = None  # set by the Consumer: the delivery to acknowledge
        self.reason = reason
        self.payload = payload
        self.where = where
        at = f" at {where}" if where else ""
        super().__init__(f"cannot decode message{at}: {reason}")
