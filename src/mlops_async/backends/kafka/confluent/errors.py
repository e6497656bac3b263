"""How librdkafka's errors read as ours, for the ``kafka+confluent://`` backend.

librdkafka reports everything as a ``KafkaError`` code inside a
``KafkaException``; the codes listed here become
:class:`~mlops_async.errors.AuthenticationError`,
:class:`~mlops_async.errors.PublishError` or (retriable)
:class:`~mlops_async.errors.BusUnavailable`. Anything else (a ``TypeError``,
a bug) propagates unchanged. librdkafka's own log lines go to the
``mlops_async.confluent.librdkafka`` logger, with its once-a-second reconnect
complaints moved to DEBUG (the library logs one warning per outage).
"""

from __future__ import annotations

import logging
from typing import NoReturn

from confluent_kafka import KafkaError, KafkaException

from ....errors import AuthenticationError, BusError, BusUnavailable, PublishError
from ...base import ErrorMap, reraise, translate

__all__ = [
    "AUTH_CODES",
    "DOWN_CODES",
    "ERRORS",
    "QUIET_CODES",
    "REBALANCED_CODES",
    "TOPIC_EXISTS",
    "UNKNOWN_TOPIC",
    "code",
    "librdkafka_log",
    "raise_ours",
    "to_ours",
]

librdkafka_log = logging.getLogger("mlops_async.confluent.librdkafka")

AUTH_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
TOO_LARGE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
DOWN_CODES = frozenset({
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT, KafkaError._RESOLVE, KafkaError.REQUEST_TIMED_OUT,
    KafkaError._WAIT_COORD, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError._TIMED_OUT_QUEUE, KafkaError._DESTROY,
})
#: A commit refused because the group moved on: the new owner reads those records again.
REBALANCED_CODES = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID, KafkaError._NO_OFFSET,
    KafkaError._STATE, KafkaError.STALE_MEMBER_EPOCH,
})
#: Consumer events that are not records and need no action (the topic is not there yet).
QUIET_CODES = frozenset({
    KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
})
TOPIC_EXISTS = KafkaError.TOPIC_ALREADY_EXISTS
UNKNOWN_TOPIC = KafkaError.UNKNOWN_TOPIC_OR_PART


def code(exc: BaseException | None) -> int | None:
    """The librdkafka error code inside ``exc``, if it carries one."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


def _retriable(exc: BaseException) -> bool:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and bool(err.retriable())


def _auth(what: str, exc: BaseException) -> BusError:
    return AuthenticationError(f"{what}: the broker refused the credentials ({exc})")


def _too_large(what: str, exc: BaseException) -> BusError:
    return PublishError(f"{what}: record larger than the broker or client allows ({exc})")


#: librdkafka's errors as ours; anything unlisted propagates unchanged.
ERRORS: ErrorMap = (
    (lambda e: code(e) in AUTH_CODES, _auth),
    (lambda e: code(e) in TOO_LARGE_CODES, _too_large),
    (lambda e: code(e) in DOWN_CODES or _retriable(e), BusUnavailable),
    ((TimeoutError, OSError), BusUnavailable),
    (KafkaException, PublishError),  # the broker refused, and retrying will not help
)


def to_ours(exc: BaseException, what: str) -> BaseException:
    """Our error for a librdkafka exception (chained), or ``exc`` itself if unlisted."""
    return translate(exc, what, ERRORS)


def raise_ours(exc: BaseException, what: str) -> NoReturn:
    """Raise :func:`to_ours`'s answer."""
    reraise(exc, what, ERRORS)


_REPEATS = ("Connection refused", "Connect to", "all brokers are down", "Disconnected",
            "brokers are down", "Failed to resolve")


class _OutageNoise(logging.Filter):
    """librdkafka logs every failed reconnect as an error (about once a second while a
    broker is away); the library logs one warning per outage, so those go to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and any(
            s in record.getMessage() for s in _REPEATS
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # Handlers do not check levels the logger already passed: decide here.
            return librdkafka_log.isEnabledFor(logging.DEBUG)
        return True


librdkafka_log.addFilter(_OutageNoise())
