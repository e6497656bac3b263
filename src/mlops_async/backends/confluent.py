"""Kafka through librdkafka (confluent-kafka), the only module that imports it.

``kafka+confluent://host:9092[,host2:9092]`` (``kafka://`` stays aiokafka).
Both Kafka backends write and read the same records: keys are partitioned
with Kafka's murmur2 (``partitioner=murmur2_random``, the Java client's
choice), so a key lands on the same partition whichever backend sent it, and
a consumer group may move from one backend to the other keeping its offsets.

Threads: librdkafka's calls that wait (consume, commit, flush, metadata) run
on one thread per client (a single-thread executor), never on the event loop.
A producer has a second thread that serves delivery reports; each batch is
counted down there and resolved on the loop with one ``call_soon_threadsafe``
per poll, not a future per record. Rebalance callbacks run inside
``consume()`` on the consumer's thread, which also owns the offset
bookkeeping, so acknowledgements, commits and revocations never race.

At-least-once: ``enable.auto.commit`` and ``enable.auto.offset.store`` are
off. Offsets are committed only up to the first record not yet acknowledged
in each partition; the revoke callback commits what was acknowledged before
its partitions go; records fetched before a revocation are never committed
(the Consumer drops them: their new owner reads them again).

Options: librdkafka's own names (``session.timeout.ms``, pass them with
``**{...}``) and the aiokafka-style names users already pass
(``session_timeout_ms``) where they map; anything else is refused when the
backend is built, naming the closest known option.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from ..endpoint import redact, split_url
from ..errors import (
    AuthenticationError,
    BusError,
    BusUnavailable,
    ConfigurationError,
    PublishError,
)
from .base import (
    Backend,
    Delivery,
    ErrorMap,
    GroupInfo,
    OffsetReset,
    PartitionLag,
    Record,
    Subscription,
    TopicInfo,
    reraise,
    translate,
)

__all__ = ["ConfluentBackend", "librdkafka_option"]

log = logging.getLogger("mlops_async.confluent")
_rdlog = logging.getLogger("mlops_async.confluent.librdkafka")
T = TypeVar("T")

# -- options ------------------------------------------------------------------

# librdkafka's properties (CONFIGURATION.md), by the clients they apply to. A
# property given to a client it does not apply to makes librdkafka log a warning,
# so each client gets only its own.
_COMMON = frozenset("""
allow.auto.create.topics api.version.request.timeout.ms broker.address.family
broker.address.ttl client.dns.lookup client.id client.rack connections.max.idle.ms debug
enable.metrics.push enable.sasl.oauthbearer.unsecure.jwt enable.ssl.certificate.verification
https.ca.location https.ca.pem log.connection.close max.in.flight
max.in.flight.requests.per.connection message.copy.max.bytes message.max.bytes
metadata.max.age.ms metadata.recovery.rebootstrap.trigger.ms metadata.recovery.strategy
plugin.library.paths receive.message.max.bytes reconnect.backoff.max.ms reconnect.backoff.ms
retry.backoff.max.ms retry.backoff.ms sasl.kerberos.keytab sasl.kerberos.kinit.cmd
sasl.kerberos.min.time.before.relogin sasl.kerberos.principal sasl.kerberos.service.name
sasl.mechanism sasl.mechanisms sasl.oauthbearer.assertion.algorithm
sasl.oauthbearer.assertion.claim.aud sasl.oauthbearer.assertion.claim.exp.seconds
sasl.oauthbearer.assertion.claim.iss sasl.oauthbearer.assertion.claim.jti.include
sasl.oauthbearer.assertion.claim.nbf.seconds sasl.oauthbearer.assertion.claim.sub
sasl.oauthbearer.assertion.file sasl.oauthbearer.assertion.jwt.template.file
sasl.oauthbearer.assertion.private.key.file sasl.oauthbearer.assertion.private.key.passphrase
sasl.oauthbearer.assertion.private.key.pem sasl.oauthbearer.client.credentials.client.id
sasl.oauthbearer.client.credentials.client.secret sasl.oauthbearer.client.id
sasl.oauthbearer.client.secret sasl.oauthbearer.config sasl.oauthbearer.extensions
sasl.oauthbearer.grant.type sasl.oauthbearer.metadata.authentication.type
sasl.oauthbearer.method sasl.oauthbearer.scope sasl.oauthbearer.sub.claim.name
sasl.oauthbearer.token.endpoint.url sasl.password sasl.username security.protocol
socket.connection.setup.timeout.ms socket.keepalive.enable socket.max.fails
socket.nagle.disable socket.receive.buffer.bytes socket.send.buffer.bytes socket.timeout.ms
ssl.ca.certificate.stores ssl.ca.location ssl.ca.pem ssl.certificate.location
ssl.certificate.pem ssl.cipher.suites ssl.crl.location ssl.curves.list
ssl.endpoint.identification.algorithm ssl.engine.id ssl.key.location ssl.key.password
ssl.key.pem ssl.keystore.location ssl.keystore.password ssl.providers ssl.sigalgs.list
statistics.interval.ms topic.blacklist topic.metadata.propagation.max.ms
topic.metadata.refresh.fast.interval.ms topic.metadata.refresh.interval.ms
topic.metadata.refresh.sparse stats_cb throttle_cb oauth_cb
""".split())
_CONSUMER = frozenset("""
check.crcs consume.callback.max.messages coordinator.query.interval.ms fetch.error.backoff.ms
fetch.max.bytes fetch.message.max.bytes fetch.min.bytes fetch.queue.backoff.ms
fetch.wait.max.ms group.instance.id group.protocol group.remote.assignor
heartbeat.interval.ms isolation.level max.partition.fetch.bytes max.poll.interval.ms
partition.assignment.strategy queued.max.messages.kbytes queued.min.messages
session.timeout.ms
""".split())
_PRODUCER = frozenset("""
acks batch.num.messages batch.size compression.codec compression.level compression.type
delivery.timeout.ms enable.gapless.guarantee enable.idempotence linger.ms
message.send.max.retries message.timeout.ms partitioner
queue.buffering.backpressure.threshold queue.buffering.max.kbytes
queue.buffering.max.messages queue.buffering.max.ms request.required.acks request.timeout.ms
retries sticky.partitioning.linger.ms
""".split())

# aiokafka-style names -> librdkafka's, where the meaning is the same.
_ALIASES = {
    "acks": "acks",
    "check_crcs": "check.crcs",
    "client_id": "client.id",
    "client_rack": "client.rack",
    "compression_type": "compression.type",
    "connections_max_idle_ms": "connections.max.idle.ms",
    "enable_idempotence": "enable.idempotence",
    "fetch_max_bytes": "fetch.max.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_min_bytes": "fetch.min.bytes",
    "group_instance_id": "group.instance.id",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "isolation_level": "isolation.level",
    "linger_ms": "linger.ms",
    "max_batch_size": "batch.size",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "max_request_size": "message.max.bytes",
    "metadata_max_age_ms": "metadata.max.age.ms",
    "partition_assignment_strategy": "partition.assignment.strategy",
    "receive_buffer_bytes": "socket.receive.buffer.bytes",
    "reconnect_backoff_ms": "reconnect.backoff.ms",
    "request_timeout_ms": "socket.timeout.ms",
    "retries": "retries",
    "retry_backoff_ms": "retry.backoff.ms",
    "sasl_kerberos_service_name": "sasl.kerberos.service.name",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_password": "sasl.password",
    "sasl_plain_username": "sasl.username",
    "security_protocol": "security.protocol",
    "send_buffer_bytes": "socket.send.buffer.bytes",
    "session_timeout_ms": "session.timeout.ms",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
}

# Refused, with the reason: the library owns them, or librdkafka has no equivalent.
_REFUSED = {
    "bootstrap_servers": "it comes from the URL (kafka+confluent://host1:9092,host2:9092)",
    "bootstrap.servers": "it comes from the URL (kafka+confluent://host1:9092,host2:9092)",
    "metadata.broker.list": "it comes from the URL (kafka+confluent://host1:9092,host2:9092)",
    "enable_auto_commit": "offsets are committed only after processing (at-least-once)",
    "enable.auto.commit": "offsets are committed only after processing (at-least-once)",
    "enable.auto.offset.store": "offsets are stored only after processing (at-least-once)",
    "auto_commit_interval_ms": "offsets are committed only after processing (at-least-once)",
    "auto.commit.interval.ms": "offsets are committed only after processing (at-least-once)",
    "group.id": "pass group= to the Consumer",
    "auto.offset.reset": "pass auto_offset_reset= to the Consumer",
    "enable.partition.eof": "the backend reads partition ends itself",
    "delivery.report.only.error": "the Producer needs every delivery report to confirm batches",
    "transactional_id": "transactions are not supported by the Producer",
    "transactional.id": "transactions are not supported by the Producer",
    "transaction.timeout.ms": "transactions are not supported by the Producer",
    "error_cb": "the backend reports broker errors itself",
    "logger": "librdkafka logs to the 'mlops_async.confluent.librdkafka' logger",
    "on_delivery": "the backend confirms deliveries itself",
    "on_commit": "the backend commits offsets itself",
    "key_serializer": "the Producer serialises messages itself",
    "value_serializer": "the Producer serialises messages itself",
    "key_deserializer": "the Consumer decodes messages itself",
    "value_deserializer": "the Consumer decodes messages itself",
    "rebalance_timeout_ms": "librdkafka uses max.poll.interval.ms (max_poll_interval_ms) "
    "as the rebalance timeout",
    "api_version": "librdkafka negotiates protocol versions itself",
    "ssl_context": "librdkafka has its own TLS stack: pass ssl_cafile/ssl_certfile/ssl_keyfile "
    "(or ssl.ca.location, ...)",
    "sasl_oauth_token_provider": "pass oauth_cb or the sasl.oauthbearer.* options",
    "max_poll_records": "use Consumer(prefetch=...)",
    "consumer_timeout_ms": "use Consumer(poll_timeout=...)",
}
_LIBRARY_OPTIONS = frozenset({"publish_timeout", "connect_timeout", "allow_plaintext_sasl"})
_URL_PARAMS = ("sasl_mechanism", "security_protocol")
# Values never shown in an error message.
_SECRETS = frozenset({
    "sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
    "sasl.oauthbearer.client.secret", "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem", "sasl.oauthbearer.config",
})

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # Kafka's (and the aiokafka backend's) partitioner: a key lands on the same
    # partition whichever backend sent it; keyless records are spread (sticky).
    "partitioner": "murmur2_random",
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    # Low latency at low load (librdkafka's default is 500 ms); large fetches when busy.
    "fetch.wait.max.ms": 10,
    # A consumer that subscribes first may create the topic, as the aiokafka backend does.
    "allow.auto.create.topics": True,
}


def librdkafka_option(name: str) -> str:
    """librdkafka's name for ``name`` (an aiokafka-style alias or a librdkafka name).

    Raises :class:`ConfigurationError` for a name the backend refuses or does
    not know, naming the closest known ones.
    """
    if name in _REFUSED:
        raise ConfigurationError(f"{name} cannot be set on kafka+confluent://: {_REFUSED[name]}")
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _COMMON or name in _CONSUMER or name in _PRODUCER:
        return name
    known = sorted(_ALIASES.keys() | _COMMON | _CONSUMER | _PRODUCER | _LIBRARY_OPTIONS)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if not close:  # session_timeout -> session.timeout.ms
        close = difflib.get_close_matches(name.replace("_", "."), known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ConfigurationError(f"unknown option for kafka+confluent://: {name}{hint}")


# -- errors -------------------------------------------------------------------

_AUTH_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
_TOO_LARGE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_DOWN_CODES = frozenset({
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT, KafkaError._RESOLVE, KafkaError.REQUEST_TIMED_OUT,
    KafkaError._WAIT_COORD, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError._TIMED_OUT_QUEUE, KafkaError._DESTROY,
})
# A commit refused because the group moved on: the new owner reads those records again.
_REBALANCED_CODES = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID, KafkaError._NO_OFFSET,
    KafkaError._STATE, KafkaError.STALE_MEMBER_EPOCH,
})
# Consumer events that are not records and need no action: the topic is not there yet.
_QUIET_CODES = frozenset({
    KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
})
_TOPIC_EXISTS = KafkaError.TOPIC_ALREADY_EXISTS
_UNKNOWN_TOPIC = KafkaError.UNKNOWN_TOPIC_OR_PART


def _code(exc: BaseException) -> int | None:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


def _retriable(exc: BaseException) -> bool:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and bool(err.retriable())


def _auth(what: str, exc: BaseException) -> BusError:
    return AuthenticationError(f"{what}: the broker refused the credentials ({exc})")


def _too_large(what: str, exc: BaseException) -> BusError:
    return PublishError(f"{what}: record larger than the broker or client allows ({exc})")


# How librdkafka's errors read as ours; anything else propagates unchanged.
_ERRORS: ErrorMap = (
    (lambda e: _code(e) in _AUTH_CODES, _auth),
    (lambda e: _code(e) in _TOO_LARGE_CODES, _too_large),
    (lambda e: _code(e) in _DOWN_CODES or _retriable(e), BusUnavailable),
    ((TimeoutError, OSError), BusUnavailable),
    (KafkaException, PublishError),  # the broker refused, and retrying will not help
)


def _raise(exc: BaseException, what: str) -> NoReturn:
    reraise(exc, what, _ERRORS)


class _Thread:
    """One OS thread that runs a client's blocking librdkafka calls, in order."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"mlops-{name}")

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=False)


async def _bounded(fut: asyncio.Future[T], timeout: float, what: str) -> T:
    """Wait for a thread's result at most ``timeout`` s; a cancellation never stops the thread.

    The call goes on in its thread (it cannot be interrupted), so it is
    shielded: a cancelled caller leaves the result for nobody, never half a call.
    """
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(fut)
    except TimeoutError as exc:
        raise BusUnavailable(f"{what}: no answer within {timeout:g} s") from exc


def _log_cb_filter(record: logging.LogRecord) -> bool:
    """librdkafka logs every failed reconnect as an error (once a second while a broker
    is away); the library logs one warning per outage, so those go to DEBUG."""
    msg = record.getMessage()
    if record.levelno >= logging.WARNING and ("Connection refused" in msg or "Connect to" in msg
                                              or "all brokers are down" in msg
                                              or "Disconnected" in msg):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return _rdlog.isEnabledFor(logging.DEBUG)
    return True


_rdlog.addFilter(_log_cb_filter)


class ConfluentBackend(Backend):
    """A Kafka cluster through librdkafka; one instance per Producer, Consumer or Admin."""

    scheme = "kafka+confluent"

    def __init__(self, bootstrap_servers: str, **options: Any) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.publish_timeout = float(options.pop("publish_timeout", 30.0))
        self.connect_timeout = float(options.pop("connect_timeout", 10.0))
        allow_plain = bool(options.pop("allow_plaintext_sasl", False))
        conf: dict[str, Any] = {}
        for key, value in options.items():
            name = librdkafka_option(key)
            if name in conf:
                raise ConfigurationError(f"{name} is given twice (as {key} and another name)")
            if value is not None:  # aiokafka's "not set"
                conf[name] = value
        if "partitioner" in conf and not isinstance(conf["partitioner"], str):
            raise ConfigurationError(
                "partitioner must name a librdkafka partitioner (e.g. 'murmur2_random')")
        if isinstance(conf.get("partition.assignment.strategy"), list | tuple):
            conf["partition.assignment.strategy"] = ",".join(conf["partition.assignment.strategy"])
        protocol = str(conf.get("security.protocol", "")).upper()
        mechanism = str(conf.get("sasl.mechanism", conf.get("sasl.mechanisms", ""))).upper()
        if mechanism == "PLAIN" and protocol != "SASL_SSL" and not allow_plain:
            raise ConfigurationError(
                "SASL PLAIN without TLS would send the password in clear text; use "
                "security_protocol='SASL_SSL' or pass allow_plaintext_sasl=True if the "
                "network is trusted")
        if "ssl.ca.location" in conf or "ssl.certificate.location" in conf:
            conf.setdefault("security.protocol", "SASL_SSL" if mechanism else "SSL")
        self._conf = conf
        self.max_record_size = int(conf.get("message.max.bytes", 1_000_000)) - 512
        self._producer: Producer | None = None
        self._thread: _Thread | None = None
        self._poller: asyncio.Future[None] | None = None
        self._stop_polling = threading.Event()
        self._settled: list[_Batch] = []  # confirmed, to resolve on the loop (poll thread only)
        self._open: set[_Batch] = set()  # enqueued, not yet confirmed
        self._progress: asyncio.Event | None = None
        self._last_error: KafkaError | None = None
        self._admin: AdminClient | None = None
        self._subs: set[_ConfluentSubscription] = set()
        self._closed = False

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every option name this backend takes (or refuses with a reason of its own)."""
        return (_COMMON | _CONSUMER | _PRODUCER | frozenset(_ALIASES) | frozenset(_REFUSED)
                | _LIBRARY_OPTIONS)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ConfluentBackend:
        """``kafka+confluent://[user:password@]host:9092[,host2:9092][?sasl_mechanism=...]``.

        Credentials in the URL mean SASL (``PLAIN`` unless ``sasl_mechanism``
        says ``SCRAM-SHA-256``/``SCRAM-SHA-512``) over TLS (``SASL_SSL``), or
        over plain TCP with ``allow_plaintext_sasl=True``.
        """
        base, creds, params = split_url(url)
        servers = base.split("://", 1)[1].split("/", 1)[0]
        if not servers:
            raise ConfigurationError(f"no broker address in {redact(url)!r}")
        for key, value in params.items():
            if key not in _URL_PARAMS:
                raise ConfigurationError(
                    f"unknown parameter {key!r} in a Kafka URL (known: {', '.join(_URL_PARAMS)})")
            options.setdefault(key, value)
        if creds is not None:
            given = {"sasl_plain_username", "sasl_plain_password", "sasl.username",
                     "sasl.password"} & set(options)
            if given:
                raise ConfigurationError(
                    f"credentials are both in the URL and in {', '.join(sorted(given))}: "
                    "give them once")
            if creds.password is None:
                raise ConfigurationError("a Kafka URL with a user needs a password: "
                                         "kafka+confluent://user:password@host:9092")
            options["sasl.username"] = creds.user
            options["sasl.password"] = creds.password
            if "sasl.mechanism" not in options:
                options.setdefault("sasl_mechanism", "PLAIN")
            if "security.protocol" not in options:
                options.setdefault(
                    "security_protocol",
                    "SASL_PLAINTEXT" if options.get("allow_plaintext_sasl") else "SASL_SSL")
        return cls(servers, **options)

    def __repr__(self) -> str:  # never shows credentials
        return f"ConfluentBackend({self.bootstrap_servers!r})"

    def _client_conf(self, *kinds: frozenset[str]) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "error_cb": self._on_error,
            "logger": _rdlog,
        }
        for k, v in self._conf.items():
            if k in _COMMON or any(k in kind for kind in kinds):
                conf[k] = v
        return conf

    def _build(self, factory: Callable[[dict[str, Any]], T], conf: dict[str, Any]) -> T:
        try:
            return factory(conf)
        except (KafkaException, ValueError, TypeError) as exc:
            text = str(exc)
            for k in _SECRETS:
                if isinstance(conf.get(k), str) and conf[k]:
                    text = text.replace(conf[k], "***")
            raise ConfigurationError(f"librdkafka refused the configuration: {text}") from None

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (on a client thread): remember it for diagnosis."""
        self._last_error = err
        if err.code() in _AUTH_CODES or err.fatal():
            _rdlog.error("%s", err.str())
        else:
            _rdlog.debug("%s", err.str())

    def _explain(self, exc: BaseException, what: str) -> NoReturn:
        """Raise our error for a failed connection, telling a refused login from an outage."""
        last = self._last_error
        if last is not None and last.code() in _AUTH_CODES:
            raise AuthenticationError(
                f"{what}: the broker refused the credentials ({last.str()})") from exc
        _raise(exc, what)

    # -- connection -----------------------------------------------------------

    async def connect(self) -> None:
        """Create the producer and check the cluster answers within ``connect_timeout``.

        Raises :class:`BusUnavailable` (or :class:`AuthenticationError`) if not;
        the client stays, and reconnects by itself once the broker is back.
        """
        if self._closed:
            raise BusUnavailable("the backend is closed")
        if self._producer is None:
            conf = self._client_conf(_PRODUCER)
            for k, v in _PRODUCER_DEFAULTS.items():
                conf.setdefault(k, v)
            # librdkafka gives up on a record when we do, so a record we report as
            # failed (and the Producer sends again) is never delivered twice by it.
            conf.setdefault("message.timeout.ms", int(self.publish_timeout * 1000))
            self._producer = self._build(Producer, conf)
            self._thread = _Thread("confluent-producer", workers=2)
            self._progress = asyncio.Event()
            self._stop_polling.clear()
            self._poller = self._thread.run(self._poll_loop, asyncio.get_running_loop())
        producer, thread = self._producer, self._thread
        assert thread is not None
        what = f"cannot connect to {self.bootstrap_servers}"
        try:
            await _bounded(thread.run(producer.list_topics, None, self.connect_timeout),
                           self.connect_timeout + 5, what)
        except BusError:
            raise
        except Exception as exc:
            self._explain(exc, what)

    async def close(self) -> None:
        """Close subscriptions, wait (bounded) for records in flight, stop the threads."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.close()
        producer, self._producer = self._producer, None
        thread, self._thread = self._thread, None
        self._admin = None
        if producer is None or thread is None:
            return
        self._stop_polling.set()
        try:
            if self._poller is not None:
                await _bounded(self._poller, 5, "stop polling")
            left = await _bounded(thread.run(producer.flush, 10.0), 15, "flush")
            if left:
                log.warning("closing: %d record(s) not confirmed by the broker", left)
                await _bounded(thread.run(self._purge_and_poll, producer), 5, "purge")
        except Exception as exc:  # closing never raises past us
            log.debug("closing the confluent producer: %r", exc)
        finally:
            thread.shutdown()
            self._settle(list(self._open))

    @staticmethod
    def _purge_and_poll(producer: Producer) -> None:
        producer.purge()
        producer.poll(0)  # the purged records' reports fail their batches

    # -- publishing -----------------------------------------------------------

    def _poll_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The producer's report thread: serve delivery reports, resolve batches per poll."""
        producer = self._producer
        assert producer is not None
        while not self._stop_polling.is_set():
            try:
                producer.poll(0.1)
            except Exception as exc:  # a report thread that died would hang every send
                log.exception("confluent producer poll: %r", exc)
            if self._settled:
                done, self._settled = self._settled, []
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._settle, done)

    def _settle(self, batches: list[_Batch]) -> None:
        """On the loop: resolve confirmed (or failed) batches."""
        for b in batches:
            self._open.discard(b)
            if b.future.done():
                continue
            if b.error is not None:
                err = translate(KafkaException(b.error), f"publishing {b.expected} record(s)",
                                _ERRORS)
                b.future.set_exception(err)
            elif b.acked >= b.expected:
                b.future.set_result(None)
            else:  # closed before the broker confirmed them
                b.future.set_exception(BusUnavailable(
                    f"closed with {b.expected - b.acked} record(s) not confirmed"))
                b.future.exception()  # nobody may be waiting any more: never log it as lost
        if self._progress is not None:
            self._progress.set()

    async def publish(self, records: Sequence[Record]) -> None:
        await (await self.enqueue(records))

    async def enqueue(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Hand a batch to librdkafka in order; the future resolves when all of it is confirmed.

        Raises :class:`BusUnavailable` when librdkafka's queue stays full for
        ``publish_timeout`` (the broker is away); records handed over before
        that are still delivered, so the caller's retry may duplicate them.
        """
        if self._producer is None:
            await self.connect()
        producer = self._producer
        assert producer is not None and self._progress is not None
        loop = asyncio.get_running_loop()
        batch = _Batch(self, loop.create_future(), len(records))
        self._open.add(batch)
        report = batch.report
        produce = producer.produce
        i = 0
        try:
            for r in records:
                try:
                    produce(r.topic, r.value, r.key, on_delivery=report, headers=r.headers)
                except BufferError:
                    # librdkafka's queue is full: wait for confirmations, then retry.
                    deadline = loop.time() + self.publish_timeout
                    while True:
                        self._progress.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.05):
                                await self._progress.wait()
                        try:
                            produce(r.topic, r.value, r.key, on_delivery=report,
                                    headers=r.headers)
                            break
                        except BufferError:
                            if loop.time() > deadline:
                                raise BusUnavailable(
                                    "publishing: librdkafka's queue stayed full for "
                                    f"{self.publish_timeout:g} s (is the broker away?)"
                                ) from None
                i += 1
        except BaseException as exc:
            # Records handed over still get reports, which find the batch abandoned.
            self._open.discard(batch)
            batch.future.cancel()
            if isinstance(exc, BusError | asyncio.CancelledError):
                raise
            _raise(exc, f"publishing {len(records)} record(s)")
        return batch.future

    # -- consuming ------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        if self._closed:
            raise BusUnavailable("the backend is closed")
        conf = self._client_conf(_CONSUMER)
        for k, v in _CONSUMER_DEFAULTS.items():
            conf.setdefault(k, v)
        conf.update({
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "group.id": group or "mlops-async-broadcast",  # never joined without a group
        })
        consumer = self._build(Consumer, conf)
        sub = _ConfluentSubscription(self, consumer, list(topics), group, auto_offset_reset)
        try:
            await sub.start()
        except BaseException as exc:
            await sub.close()
            if isinstance(exc, BusError | asyncio.CancelledError):
                raise
            self._explain(exc, f"cannot subscribe to {list(topics)}")
        self._subs.add(sub)
        return sub

    # -- admin ----------------------------------------------------------------

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = self._build(AdminClient, self._client_conf())
        return self._admin

    async def _admin_call(self, what: str, fut: Any) -> Any:
        """Await an AdminClient future (resolved by librdkafka's own thread) within bounds."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                return await asyncio.wrap_future(fut)
        except TimeoutError as exc:
            raise BusUnavailable(f"{what}: no answer within {self.publish_timeout:g} s") from exc
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, what)
        finally:
            if self._admin is not None:
                self._admin.poll(0)  # serve its log and error callbacks (never waits)

    async def _blocking(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            await self.connect()
        assert self._thread is not None
        try:
            return await _bounded(self._thread.run(fn, *args), self.publish_timeout + 5, what)
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, what)

    async def _topics(self) -> dict[str, int]:
        admin = self._admin_client()
        meta = await self._blocking("list topics", admin.list_topics, None, self.publish_timeout)
        return {name: len(t.partitions) for name, t in meta.topics.items()
                if not name.startswith("__") and t.error is None}

    async def list_topics(self) -> list[TopicInfo]:
        """Topics with partition counts and the number of records written (end offsets)."""
        topics = await self._topics()
        tps = {(t, p): None for t, n in topics.items() for p in range(n)}
        ends = await self._blocking("list topics", self._end_offsets, tps)
        return [TopicInfo(t, n, sum(ends.get((t, p), 0) for p in range(n)))
                for t, n in sorted(topics.items())]

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        admin = self._admin_client()
        futures = admin.create_topics([NewTopic(name, partitions, replication,
                                                config=dict(config or {}))],
                                      operation_timeout=self.publish_timeout)
        try:
            await self._admin_call(f"create topic {name}", futures[name])
        except PublishError as exc:
            if _code(exc.__cause__ or exc) != _TOPIC_EXISTS:
                raise

    async def delete_topic(self, name: str) -> None:
        admin = self._admin_client()
        futures = admin.delete_topics([name], operation_timeout=self.publish_timeout)
        try:
            await self._admin_call(f"delete topic {name}", futures[name])
        except (PublishError, BusUnavailable) as exc:
            if _code(exc.__cause__ or exc) != _UNKNOWN_TOPIC:
                raise

    async def describe_groups(self) -> list[GroupInfo]:
        admin = self._admin_client()
        listed = await self._admin_call("list groups", admin.list_consumer_groups())
        out = []
        for name in sorted({g.group_id for g in listed.valid}):
            state, members = "Unknown", 0
            try:
                # One group per request: a group the broker cannot describe must
                # not hide the others.
                futures = admin.describe_consumer_groups([name])
                desc = await self._admin_call(f"describe group {name}", futures[name])
                state = getattr(desc.state, "name", str(desc.state)).capitalize()
                members = len(desc.members)
            except BusError as exc:
                log.debug("describe group %s: %r", name, exc)
            lag = await self.group_lag(name)
            out.append(GroupInfo(name, tuple(sorted({p.topic for p in lag})), members, state,
                                 tuple(lag)))
        return out

    async def group_lag(self, group: str) -> list[PartitionLag]:
        topics = await self._topics()
        tps = [TopicPartition(t, p) for t, n in sorted(topics.items()) for p in range(n)]
        if not tps:
            return []
        committed = await self._blocking(f"lag of group {group}", self._committed, group, tps)
        if not committed:
            return []
        ends = await self._blocking(f"lag of group {group}", self._end_offsets, committed)
        out = []
        for (t, p), (c, start) in sorted(committed.items()):
            base = c if c is not None else start
            end = ends[(t, p)]
            out.append(PartitionLag(t, p, c, end, max(0, end - base)))
        return out

    def _probe(self, group: str | None = None) -> Consumer:
        conf = self._client_conf(_CONSUMER)
        conf.update({"group.id": group or "mlops-async-probe", "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "fetch.wait.max.ms": 10})
        return self._build(Consumer, conf)

    def _committed(
        self, group: str, tps: list[TopicPartition]
    ) -> dict[tuple[str, int], tuple[int | None, int]]:
        """On a thread: (committed offset or None, log start) of the partitions the group has
        committed on, read by a consumer that carries the group id but never joins."""
        probe = self._probe(group)
        try:
            got = probe.committed(tps, timeout=self.publish_timeout)
            by_topic: dict[str, list[TopicPartition]] = {}
            for tp in got:
                by_topic.setdefault(tp.topic, []).append(tp)
            out: dict[tuple[str, int], tuple[int | None, int]] = {}
            for topic, parts in by_topic.items():
                if not any(tp.offset >= 0 for tp in parts):
                    continue
                for tp in parts:
                    low, _ = probe.get_watermark_offsets(tp, timeout=self.publish_timeout)
                    out[(topic, tp.partition)] = (tp.offset if tp.offset >= 0 else None, low)
            return out
        finally:
            probe.close()

    def _end_offsets(self, where: dict[tuple[str, int], Any]) -> dict[tuple[str, int], int]:
        """On a thread: end offsets, taking the fetch high watermark where it is larger.

        Some Kafka-protocol brokers answer ListOffsets(latest) with the start of
        the last record batch + 1; the high watermark in a fetch response is
        always right, so read one record per partition and take the larger.
        """
        if not where:
            return {}
        probe = self._probe()
        try:
            ends: dict[tuple[str, int], int] = {}
            for (t, p) in where:
                _, ends[(t, p)] = probe.get_watermark_offsets(TopicPartition(t, p),
                                                              timeout=self.publish_timeout)
            starts = []
            for (t, p), at in where.items():
                c = at[0] if isinstance(at, tuple) else at
                starts.append(TopicPartition(t, p, c if c is not None and c >= 0
                                             else OFFSET_BEGINNING))
            probe.assign(starts)
            deadline = time.monotonic() + 3.0
            pending = {k for k, v in ends.items() if v > 0}
            while pending and time.monotonic() < deadline:
                for m in probe.consume(100, 0.2):
                    pending.discard((m.topic() or "", m.partition() or 0))
                for key in list(pending):
                    _, high = probe.get_watermark_offsets(TopicPartition(*key), cached=True)
                    if high > 0 and high >= ends[key]:
                        pending.discard(key)
            for key in ends:
                with contextlib.suppress(KafkaException):
                    _, high = probe.get_watermark_offsets(TopicPartition(*key), cached=True)
                    ends[key] = max(ends[key], high)
            return ends
        finally:
            probe.close()


class _Batch:
    """Records handed to librdkafka together, counted down by their delivery reports."""

    __slots__ = ("acked", "backend", "error", "expected", "future")

    def __init__(self, backend: ConfluentBackend, future: asyncio.Future[None], n: int) -> None:
        self.backend = backend
        self.future = future
        self.expected = n
        self.acked = 0
        self.error: KafkaError | None = None

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report, on the poll thread."""
        if err is not None and self.error is None:
            self.error = err
        self.acked += 1
        if self.acked == self.expected:
            self.backend._settled.append(self)


_Key = tuple[str, int]


class _ConfluentSubscription(Subscription):
    """A librdkafka consumer driven from one thread, which also owns the offset bookkeeping.

    Acknowledgements are handed to that thread (``_inbox``); it folds them into
    per-partition prefixes and commits them, between waits of a running fetch
    or in a job of their own, so a commit never waits for a long poll to end.
    """

    def __init__(
        self,
        backend: ConfluentBackend,
        consumer: Consumer,
        topics: list[str],
        group: str | None,
        reset: OffsetReset,
    ) -> None:
        self.backend = backend
        self.consumer = consumer
        self.topics = topics
        self.group = group
        self.reset = reset
        self.epoch = 0
        #: Revocations (and losses) seen: a test can assert that a restart caused none.
        self.revocations = 0
        self._thread = _Thread("confluent-consumer")
        self._loop = asyncio.get_running_loop()
        # Thread-side state: only the consumer's thread reads or writes these.
        self._outstanding: dict[_Key, deque[int]] = {}
        self._done: dict[_Key, set[int]] = {}
        self._to_commit: dict[_Key, int] = {}
        self._unassigned: list[str] = []  # broadcast topics whose partitions are not known yet
        self._next_lookup = 0.0
        # Written on the thread, read on the loop (single dict operations).
        self._revoked_at: dict[_Key, int] = {}
        # Loop -> thread: (deliveries, future or None) to acknowledge.
        self._inbox: deque[tuple[Sequence[Delivery], asyncio.Future[None] | None]] = deque()
        self._fetching: asyncio.Future[list[Delivery]] | None = None
        self._closing = False
        self._closed = False

    # -- loop side --------------------------------------------------------------

    async def start(self) -> None:
        b = self.backend
        await _bounded(self._thread.run(self._start), b.connect_timeout + 5,
                       f"cannot subscribe to {self.topics}")

    def owns(self, delivery: Delivery) -> bool:
        key, fetched_in = delivery.position
        return bool(fetched_in >= self._revoked_at.get(key, 0))

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), max_records, timeout)

    async def ack_and_fetch(
        self, deliveries: Sequence[Delivery], max_records: int, timeout: float
    ) -> list[Delivery]:
        if self._closing:
            return []
        if deliveries and self.group is not None:
            self._inbox.append((deliveries, None))  # committed by the fetch job, first thing
        job = self._fetching
        if job is None:
            job = self._fetching = self._thread.run(self._fetch, max_records, timeout)
        try:
            # A cancelled caller leaves the job running; the next fetch takes its records.
            got = await asyncio.shield(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._fetching is job:
                self._fetching = None
            if isinstance(exc, BusError):
                raise
            _raise(exc, "fetch")
        if self._fetching is job:
            self._fetching = None
        return got

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self.group is None or not deliveries or self._closed:
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._inbox.append((deliveries, done))
        # A running fetch commits it within one wait slice; this job makes sure.
        self._thread.run(self._serve_inbox)
        await _bounded(done, self.backend.publish_timeout, "commit")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self.backend._subs.discard(self)
        try:
            await _bounded(self._thread.run(self._close), 20, "closing the consumer")
        except Exception as exc:  # closing never raises past us
            log.warning("closing the confluent consumer: %r", exc)
        finally:
            self._thread.shutdown()
            while self._inbox:
                _, fut = self._inbox.popleft()
                if fut is not None and not fut.done():
                    fut.set_exception(BusUnavailable("closed before the commit"))

    def _resolve(self, fut: asyncio.Future[None], exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)

    # -- thread side --------------------------------------------------------------

    def _start(self) -> None:
        c = self.consumer
        c.list_topics(None, self.backend.connect_timeout)  # the broker answers, or raises
        if self.group is not None:
            c.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                        on_lost=self._on_lost)
        else:
            self._unassigned = list(self.topics)
            self._assign_broadcast()

    def _assign_broadcast(self) -> None:
        """Without a group: read every partition of each topic (once its partitions are known)."""
        self._next_lookup = time.monotonic() + 1.0
        start = OFFSET_BEGINNING if self.reset == "earliest" else OFFSET_END
        found, missing = [], []
        for topic in self._unassigned:
            meta = self.consumer.list_topics(topic, self.backend.connect_timeout).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                missing.append(topic)
                continue
            found += [TopicPartition(topic, p, start) for p in sorted(meta.partitions)]
        if found:
            self.consumer.incremental_assign(found)
        self._unassigned = missing

    def _fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        """One fetch job: commit what was acknowledged, then wait for records in short slices."""
        self._serve_inbox(asynchronous=True)
        if self._unassigned and time.monotonic() >= self._next_lookup:
            self._assign_broadcast()
        c = self.consumer
        msgs = c.consume(max_records, 0)
        deadline = time.monotonic() + timeout
        while not msgs and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # consume(n, t) waits the whole t unless n records come: wait for one,
            # then take what else is ready, so a lone record is handed out at once.
            msgs = c.consume(1, min(left, 0.1))
            if msgs and max_records > 1:
                msgs += c.consume(max_records - 1, 0)
            if self._inbox:
                self._serve_inbox()
        return self._deliveries(msgs)

    def _deliveries(self, msgs: list[Message]) -> list[Delivery]:
        out: list[Delivery] = []
        append = out.append
        epoch = self.epoch
        track = self.group is not None
        outstanding = self._outstanding
        for m in msgs:
            err = m.error()
            if err is not None:
                self._consumer_error(err)
                continue
            topic, part, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
            key = (topic, part)
            if track:
                q = outstanding.get(key)
                if q is None:
                    q = outstanding[key] = deque()
                    self._done[key] = set()
                q.append(offset)
            kind, ts = m.timestamp()
            headers = m.headers()
            append(Delivery(topic, part, offset, m.value(), m.key(),
                            tuple(headers) if headers else None, (key, epoch),
                            timestamp=ts / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None))
        return out

    def _consumer_error(self, err: KafkaError) -> None:
        code = err.code()
        if code in _QUIET_CODES or err.retriable() or code in _DOWN_CODES:
            log.debug("consumer: %s", err.str())
            return
        raise KafkaException(err)

    def _serve_inbox(self, asynchronous: bool = False) -> None:
        """Fold acknowledgements into per-partition prefixes and commit them.

        With waiters (``ack()``) the commit is synchronous and each waiter hears
        how it went; acknowledgements sent along with a fetch commit asynchronously
        (librdkafka reports the outcome in a later poll).
        """
        waiters: list[asyncio.Future[None]] = []
        inbox = self._inbox
        while inbox:
            deliveries, fut = inbox.popleft()
            self._apply(deliveries)
            if fut is not None:
                waiters.append(fut)
        error: BaseException | None = None
        try:
            self._commit(asynchronous=asynchronous and not waiters)
        except Exception as exc:
            error = translate(exc, "commit", _ERRORS)
        for fut in waiters:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._resolve, fut, error)

    def _apply(self, deliveries: Sequence[Delivery]) -> None:
        touched = set()
        revoked_at = self._revoked_at
        for d in deliveries:
            key, fetched_in = d.position
            if fetched_in < revoked_at.get(key, 0):
                continue  # its partition moved on: the new owner commits it
            done = self._done.get(key)
            if done is not None:
                done.add(d.offset)
                touched.add(key)
        for key in touched:
            q, done = self._outstanding[key], self._done[key]
            last = None
            while q and q[0] in done:
                last = q.popleft()
                done.discard(last)
            if last is not None:
                self._to_commit[key] = last + 1
            if not q:
                done.clear()  # acks of records already committed (a retried ack)

    def _commit(self, only: set[_Key] | None = None, asynchronous: bool = False) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._to_commit.items()
                   if only is None or (t, p) in only]
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
                results = offsets
            else:
                results = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if _code(exc) not in _REBALANCED_CODES:
                raise  # kept in _to_commit: sent again with the next commit
            log.warning("commit skipped after a rebalance (%s); records may be redelivered", exc)
            results = offsets
        for tp in results:
            key = (tp.topic, tp.partition)
            if tp.error is not None and tp.error.code() not in _REBALANCED_CODES:
                raise KafkaException(tp.error)
            if self._to_commit.get(key) == tp.offset:
                del self._to_commit[key]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.debug("assigned %s", [(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Inside consume(): commit what was acknowledged, then forget the partitions."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._serve_inbox()  # acknowledgements that are here already count
        try:
            self._commit(only=revoked)  # what an earlier commit failed to send
        except Exception as exc:  # a callback must not raise into consume()
            log.warning("commit before a rebalance failed (%s); records may be redelivered", exc)
        self._forget(revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group went on without us (session timeout): nothing may be committed."""
        log.warning("lost %d partition(s) to the group; unacknowledged records are redelivered",
                    len(partitions))
        self._forget({(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, keys: set[_Key]) -> None:
        if not keys:
            return
        self.revocations += 1
        # revoked_at first: the loop reads epoch, then owns(); a delivery fetched
        # before this revocation must already read as stale when it sees the new epoch.
        epoch = self.epoch + 1
        for key in keys:
            self._revoked_at[key] = epoch
            self._outstanding.pop(key, None)
            self._done.pop(key, None)
            self._to_commit.pop(key, None)
        self.epoch = epoch

    def _close(self) -> None:
        try:
            self._serve_inbox()
        except Exception as exc:
            log.warning("final commit failed (%s); records may be redelivered", exc)
        self.consumer.close()  # revokes (committing what is left) and leaves the group
