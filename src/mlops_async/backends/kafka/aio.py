"""Kafka, through aiokafka (the only module that imports it).

``kafka://host:9092[,host2:9092]``. Publishing builds one record batch per
partition (``create_batch``/``send_batch``) from each batch the Producer
hands over, which is several times faster than one ``send()`` per record.
Keyed records are partitioned with Kafka's murmur2 partitioner (the same
partition the Java client picks); keyless ones stick to one partition per
batch, rotating between batches, or with ``partitioner="round_robin"`` take
the next partition record by record (see :mod:`.partitioning`).

Consuming: auto-commit is always off. Offsets are committed only for
records the Consumer acknowledged, and only up to the first record not yet
acknowledged in each partition, so a record that is still being processed
is never skipped by a later commit. On rebalance, revoked partitions are
forgotten and the Consumer drops what it buffered from them: the new owner
reads them again from the last commit (at-least-once).

aiokafka traps guarded here: every wait on the broker is bounded
(``request_timeout_ms``, plus our own ``publish_timeout``); a client whose
``start()`` failed is discarded, never reused; ``stop()`` is bounded.
Processing one message for longer than ``max_poll_interval_ms`` (default
300 s) makes the broker consider the consumer dead and hand its partitions
to another member: raise that option for slow handlers.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import ssl
from collections.abc import Sequence
from itertools import islice
from typing import Any, NoReturn

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    CommitFailedError,
    IllegalSaslStateError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata

from ...errors import (
    AuthenticationError,
    BusError,
    BusUnavailable,
    ConfigurationError,
    MessageTooLarge,
    MissingDependency,
    PublishError,
)
from ..base import (
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
from .ledger import PartitionLedger
from .pacing import CommitPacer
from .partitioning import RoundRobin, round_robin_wanted
from .url import URL_PARAMS, check_plaintext_sasl, parse_url

__all__ = ["KafkaBackend"]

log = logging.getLogger("mlops_async.kafka")

class _OutageNoise(logging.Filter):
    """aiokafka logs an ERROR for every failed reconnect (about once a second while a
    broker is away); the library logs one warning per outage and one on recovery, so
    those repeats go to DEBUG. Everything else aiokafka says is left as it is."""

    _REPEATS = ("Unable connect to", "Unable to update metadata", "Unable to request metadata",
                "Got error produce response", "Failed fetch messages", "Unable to connect",
                "Connection at", "Unable to bootstrap")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and isinstance(record.msg, str) and (
            record.msg.startswith(self._REPEATS)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # Handlers do not check levels the logger already passed: decide here.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


@functools.cache
def _quiet_outage_noise() -> None:
    """Install the filter on aiokafka's loggers once, when the backend is first used."""
    noise = _OutageNoise()
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.client", "aiokafka.cluster",
                 "aiokafka.producer.sender", "aiokafka.producer.producer",
                 "aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator",
                 "aiokafka.consumer.consumer", "aiokafka.admin.client"):
        logging.getLogger(name).addFilter(noise)

_PRODUCER_PARAMS = frozenset(inspect.signature(AIOKafkaProducer.__init__).parameters) - {"self"}
_CONSUMER_PARAMS = frozenset(inspect.signature(AIOKafkaConsumer.__init__).parameters) - {"self"}
_ADMIN_PARAMS = frozenset(inspect.signature(AIOKafkaAdminClient.__init__).parameters) - {"self"}
_CONN_PARAMS = frozenset(inspect.signature(create_conn).parameters) - {"host", "port"}

# Options the library owns: overriding them would break delivery guarantees.
_OWNED = {
    "bootstrap_servers": "it comes from the URL (kafka://host1:9092,host2:9092)",
    "enable_auto_commit": "offsets are committed only after processing (at-least-once)",
    "auto_commit_interval_ms": "offsets are committed only after processing (at-least-once)",
    "key_serializer": "the Producer serialises messages itself",
    "value_serializer": "the Producer serialises messages itself",
    "key_deserializer": "the Consumer decodes messages itself",
    "value_deserializer": "the Consumer decodes messages itself",
    "topics": "pass topic= to the Consumer",
    "loop": "the running event loop is used",
    "consumer_timeout_ms": "use Consumer(poll_timeout=...)",
}
_LIBRARY_OPTIONS = {
    "partitioner",  # ours, not aiokafka's: the batch path partitions records itself
    "publish_timeout",
    "connect_timeout",
    "allow_plaintext_sasl",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
}

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "max_batch_size": 256 * 1024,  # one send_batch carries ~600 typical messages
    "request_timeout_ms": 15_000,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    "fetch_max_wait_ms": 10,  # low latency at low load; large batches when busy
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "request_timeout_ms": 15_000,
}

_AUTH_ERRORS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

_TOPIC_EXISTS = 36
_UNKNOWN_TOPIC = 3


def _auth(what: str, exc: BaseException) -> BusError:
    return AuthenticationError(f"{what}: the broker refused the credentials ({exc})")


def _too_large(what: str, exc: BaseException) -> BusError:
    return PublishError(f"{what}: record larger than the broker or client allows ({exc})")


def _codec_missing(what: str, exc: BaseException) -> BusError:
    return MissingDependency(
        f"{what}: {exc}; install the compression codecs with "
        "pip install 'mlops-async[kafka-codecs]'"
    )


# How aiokafka's errors read as ours; anything else propagates unchanged.
_ERRORS: ErrorMap = (
    (lambda e: isinstance(e, _AUTH_ERRORS) or isinstance(e.__cause__, _AUTH_ERRORS), _auth),
    ((MessageSizeTooLargeError, RecordTooLargeError), _too_large),
    ((KafkaConnectionError, KafkaTimeoutError, TimeoutError, OSError), BusUnavailable),
    (lambda e: isinstance(e, KafkaError) and e.retriable, BusUnavailable),
    (KafkaError, PublishError),  # the broker refused, and retrying will not help
    (lambda e: isinstance(e, RuntimeError) and "ompression library" in str(e), _codec_missing),
)


def _raise(exc: BaseException, what: str) -> NoReturn:
    """Raise our error for ``exc`` (the driver's chained), or ``exc`` itself if unlisted."""
    reraise(exc, what, _ERRORS)


def _translate(exc: BaseException, what: str) -> BaseException:
    """aiokafka error -> our error (driver error as ``__cause__``), or ``exc`` if unlisted."""
    return translate(exc, what, _ERRORS)


async def _within(awaitable: Any, timeout: float) -> Any:
    """``asyncio.wait_for`` without its 3.11 habit of swallowing a cancellation."""
    async with asyncio.timeout(timeout):
        return await awaitable


async def _bounded_stop(client: Any, timeout: float = 10.0) -> None:
    """``stop()``/``close()`` can hang on a dead broker: bound it."""
    stop = getattr(client, "stop", None) or client.close
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        # aiokafka's stop() cancels and awaits a helper task of its own; one that
        # never ran its first step re-raises that CancelledError and aborts stop()
        # before the connections close. One turn of the loop lets it start.
        await asyncio.sleep(0)
        await _within(stop(), timeout)
    except asyncio.CancelledError:
        if task is None or task.cancelling() > cancels:
            raise  # we are being cancelled: let it through
        # Not ours: finish what the aborted stop() left open.
        log.debug("stopping %s: the client leaked its own CancelledError", type(client).__name__)
        for part in ("_fetcher", "_client"):
            inner = getattr(client, part, None)
            try:
                if inner is not None:
                    await _within(inner.close(), timeout)
            except asyncio.CancelledError:
                # The fetcher re-raises its own cancelled helpers' too (broker gone).
                if task is None or task.cancelling() > cancels:
                    raise
            except Exception as exc:
                log.debug("stopping %s.%s: %r", type(client).__name__, part, exc)
    except Exception as exc:  # closing must never raise past us
        log.debug("stopping %s: %r", type(client).__name__, exc)


class KafkaBackend(Backend):
    """A Kafka cluster; one instance per Producer, Consumer or Admin."""

    scheme = "kafka"

    def __init__(self, bootstrap_servers: str, **options: Any) -> None:
        _quiet_outage_noise()
        self.bootstrap_servers = bootstrap_servers
        for key, why in _OWNED.items():
            if key in options:
                raise ConfigurationError(f"{key} cannot be set: {why}")
        unknown = set(options) - _PRODUCER_PARAMS - _CONSUMER_PARAMS - _ADMIN_PARAMS
        unknown -= _LIBRARY_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown Kafka option(s): {', '.join(sorted(unknown))} "
                "(they are neither aiokafka producer/consumer options nor mlops_async ones)"
            )
        self.publish_timeout = float(options.pop("publish_timeout", 30.0))
        self.connect_timeout = float(options.pop("connect_timeout", 10.0))
        allow_plain = bool(options.pop("allow_plaintext_sasl", False))
        self._round_robin = round_robin_wanted(options.pop("partitioner", None), self.scheme)
        self._security = self._security_options(options, allow_plain)
        self._options = options
        # The batch path does not apply aiokafka's max_request_size check: apply
        # it up front (the Producer raises MessageTooLarge from send()).
        self.max_record_size = int(options.get("max_request_size", 1024 * 1024)) - 512
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._partitioner = DefaultPartitioner()
        self._sticky: dict[str, int] = {}
        self._turns = RoundRobin()
        self._subs: set[_KafkaSubscription] = set()

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return (_PRODUCER_PARAMS | _CONSUMER_PARAMS | _ADMIN_PARAMS | frozenset(_LIBRARY_OPTIONS)
                | frozenset(_OWNED) | frozenset(URL_PARAMS))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaBackend:
        """``kafka://[user:password@]host:9092[,host2:9092][?sasl_mechanism=...]``.

        Credentials in the URL mean SASL (``PLAIN`` unless ``sasl_mechanism``
        says ``SCRAM-SHA-256``/``SCRAM-SHA-512``) over TLS (``SASL_SSL``), or
        over plain TCP with ``allow_plaintext_sasl=True``.
        """
        servers = parse_url(url, options, user="sasl_plain_username",
                            password="sasl_plain_password")
        return cls(servers, **options)

    def __repr__(self) -> str:  # never shows credentials
        return f"KafkaBackend({self.bootstrap_servers!r})"

    @staticmethod
    def _security_options(options: dict[str, Any], allow_plain: bool) -> dict[str, Any]:
        sec: dict[str, Any] = {}
        files = {
            k: options.pop(k)
            for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
            if k in options
        }
        if files and "ssl_context" not in options:
            sec["ssl_context"] = create_ssl_context(
                cafile=files.get("ssl_cafile"),
                certfile=files.get("ssl_certfile"),
                keyfile=files.get("ssl_keyfile"),
                password=files.get("ssl_password"),
            )
            options.setdefault(
                "security_protocol", "SSL" if "sasl_mechanism" not in options else "SASL_SSL"
            )
        if isinstance(options.get("ssl_context"), ssl.SSLContext):
            options.setdefault(
                "security_protocol", "SASL_SSL" if "sasl_mechanism" in options else "SSL"
            )
        protocol = str(options.get("security_protocol", "PLAINTEXT")).upper()
        check_plaintext_sasl(str(options.get("sasl_mechanism", "")), protocol, allow_plain)
        if protocol in ("SSL", "SASL_SSL") and "ssl_context" not in options and not sec:
            sec["ssl_context"] = create_ssl_context()
        return sec

    def _kwargs(self, params: frozenset[str], defaults: dict[str, Any]) -> dict[str, Any]:
        kw = {k: v for k, v in defaults.items() if k in params}
        kw.update({k: v for k, v in self._options.items() if k in params})
        kw.update({k: v for k, v in self._security.items() if k in params})
        kw["bootstrap_servers"] = self.bootstrap_servers
        return kw

    # -- connection -----------------------------------------------------------

    async def connect(self) -> None:
        if self._producer is not None:
            return
        what = f"cannot connect to {self.bootstrap_servers}"
        try:
            producer = AIOKafkaProducer(**self._kwargs(_PRODUCER_PARAMS, _PRODUCER_DEFAULTS))
        except Exception as exc:  # e.g. compression_type whose codec is not installed
            _raise(exc, what)
        try:
            await _within(producer.start(), self.connect_timeout)
        except BaseException as exc:
            # A client whose start() failed must not be reused: it would hang on send.
            await _bounded_stop(producer)
            if isinstance(exc, asyncio.CancelledError):
                raise
            err = _translate(exc, what)
            if not isinstance(err, AuthenticationError):
                # A refused SASL login reads like an outage (or, for SCRAM, like a
                # KeyError from aiokafka): ask the broker directly.
                err = await self._auth_failure(what) or err
            if err is exc:
                raise
            raise err from exc
        self._producer = producer

    async def _auth_failure(self, what: str) -> AuthenticationError | None:
        """The SASL refusal behind a failed start, if that is what it was.

        aiokafka's bootstrap logs a refused SASL handshake and raises only
        "Unable to bootstrap", which reads like an outage (and a SCRAM refusal
        can surface as a KeyError from its authenticator). One direct
        connection to the first broker tells the two apart.
        """
        protocol = str(self._options.get("security_protocol", "")).upper()
        if not protocol.startswith("SASL"):
            return None
        host, _, port_text = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        port = int(port_text) if port_text.isdigit() else 9092
        kw = {k: v for k, v in self._kwargs(_CONN_PARAMS, {}).items() if k != "bootstrap_servers"}
        kw["request_timeout_ms"] = int(self.connect_timeout * 1000)
        mechanism = kw.get("sasl_mechanism")
        try:
            conn = await _within(create_conn(host, port, **kw), self.connect_timeout)
        except _AUTH_ERRORS as exc:
            return AuthenticationError(f"{what}: the broker refused the credentials ({exc})")
        except (KeyError, ValueError) as exc:  # aiokafka's SCRAM exchange got an error reply
            return AuthenticationError(
                f"{what}: the broker refused the {mechanism} credentials ({exc!r})"
            )
        except KafkaConnectionError:
            pass  # closed during the handshake, or not there at all: see below
        except Exception:
            return None
        else:
            conn.close()
            return None
        # The broker answers without SASL but drops us during it: it does not
        # accept this mechanism (or these credentials) and retrying cannot help.
        kw.update(security_protocol="SSL" if protocol == "SASL_SSL" else "PLAINTEXT",
                  sasl_mechanism=None)
        try:
            conn = await _within(create_conn(host, port, **kw), self.connect_timeout)
        except Exception:
            return None  # the broker is away: an outage after all
        conn.close()
        return AuthenticationError(
            f"{what}: the broker closed the connection during SASL {mechanism} "
            "authentication (mechanism not enabled, or credentials refused)"
        )

    async def close(self) -> None:
        for sub in list(self._subs):
            await sub.close()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await _bounded_stop(producer)
        if admin is not None:
            await _bounded_stop(admin)

    # -- publishing -----------------------------------------------------------

    async def publish(self, records: Sequence[Record]) -> None:
        await (await self.enqueue(records))

    async def enqueue(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Queue record batches in aiokafka (in order); the future resolves on broker acks."""
        if self._producer is None:
            await self.connect()
        try:
            futures = await _within(self._send_batches(records), self.publish_timeout)
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, f"publishing {len(records)} record(s)")
        return asyncio.ensure_future(self._confirm(futures, len(records)))

    async def _confirm(self, futures: list[asyncio.Future[Any]], n: int) -> None:
        try:
            await _within(asyncio.gather(*futures), self.publish_timeout)
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, f"publishing {n} record(s)")

    async def _send_batches(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        producer = self._producer
        assert producer is not None
        groups: dict[tuple[str, int], Sequence[Record]] = {}
        partitions: dict[str, list[int]] = {}
        topics = {r.topic for r in records}
        round_robin = self._round_robin
        if len(topics) == 1 and all(r.key is None for r in records):
            # The common case: one topic, no keys -> one sticky partition, no per-record work;
            # round-robin: every n-th record to one partition, a slice each (no per-record work).
            (topic,) = topics
            only = sorted(await producer.partitions_for(topic))
            if round_robin:
                n, start = len(only), self._turns.take(topic, len(records))
                for k in range(min(n, len(records))):
                    groups[(topic, only[(start + k) % n])] = records[k::n]
            else:
                sticky = self._sticky[topic] = (self._sticky.get(topic, -1) + 1) % len(only)
                groups[(topic, only[sticky])] = records
            records = ()
        for r in records:
            parts = partitions.get(r.topic)
            if parts is None:
                found = await producer.partitions_for(r.topic)
                parts = partitions[r.topic] = sorted(found)
                self._sticky[r.topic] = (self._sticky.get(r.topic, -1) + 1) % len(parts)
            if r.key is None:
                if round_robin:
                    p = parts[self._turns.take(r.topic) % len(parts)]
                else:
                    p = parts[self._sticky[r.topic]]
            else:
                p = self._partitioner(r.key, parts, parts)
            groups.setdefault((r.topic, p), []).append(r)  # type: ignore[attr-defined]
        futures = []
        for (topic, p), recs in groups.items():
            done = 0
            while done < len(recs):
                batch = producer.create_batch()
                added = _fill(batch, recs, done)
                if not added:
                    default = _PRODUCER_DEFAULTS["max_batch_size"]
                    limit = self._options.get("max_batch_size", default)
                    raise MessageTooLarge(len(recs[done].value), limit, topic)
                done += added
                futures.append(await producer.send_batch(batch, topic, partition=p))
        return futures

    # -- consuming ------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        kw = self._kwargs(_CONSUMER_PARAMS, _CONSUMER_DEFAULTS)
        kw.update(group_id=group, enable_auto_commit=False, auto_offset_reset=auto_offset_reset)
        consumer = AIOKafkaConsumer(**kw)
        sub = _KafkaSubscription(self, consumer, group)
        try:
            await _within(consumer.start(), self.connect_timeout)
            consumer.subscribe(list(topics), listener=sub.listener)
        except BaseException as exc:
            await _bounded_stop(consumer)
            if isinstance(exc, asyncio.CancelledError):
                raise
            _raise(exc, f"cannot subscribe to {list(topics)}")
        self._subs.add(sub)
        return sub

    # -- admin ----------------------------------------------------------------

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                **self._kwargs(_ADMIN_PARAMS, {"request_timeout_ms": 15_000})
            )
            try:
                await _within(admin.start(), self.connect_timeout)
            except Exception as exc:
                await _bounded_stop(admin)
                _raise(exc, f"cannot connect to {self.bootstrap_servers}")
            self._admin = admin
        return self._admin

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await _within(coro, self.publish_timeout)
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, what)

    async def _topics(self) -> list[TopicInfo]:
        admin = await self._admin_client()
        described = await self._call("list topics", admin.describe_topics())
        return sorted(
            (
                TopicInfo(t["topic"], len(t["partitions"]))
                for t in described
                if not t.get("is_internal") and not t["topic"].startswith("__")
            ),
            key=lambda t: t.name,
        )

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        wanted = set(topics)
        return {t.name: t.partitions for t in await self._topics() if t.name in wanted}

    async def list_topics(self) -> list[TopicInfo]:
        """Topics with partition counts and the number of records written (end offsets)."""
        topics = await self._topics()
        tps: dict[TopicPartition, int | None] = {
            TopicPartition(t.name, p): None for t in topics for p in range(t.partitions)
        }
        probe = AIOKafkaConsumer(**self._kwargs(_CONSUMER_PARAMS, _CONSUMER_DEFAULTS))
        try:
            await _within(probe.start(), self.connect_timeout)
            ends = await self._end_offsets(probe, tps)
        except Exception as exc:
            _raise(exc, "list topics")
        finally:
            await _bounded_stop(probe)
        return [
            TopicInfo(t.name, t.partitions,
                      sum(ends.get(TopicPartition(t.name, p), 0) for p in range(t.partitions)))
            for t in topics
        ]

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        admin = await self._admin_client()
        resp = await self._call(
            f"create topic {name}",
            admin.create_topics(
                [NewTopic(name, partitions, replication, topic_configs=config or {})]
            ),
        )
        for err in getattr(resp, "topic_errors", ()):
            code, msg = err[1], err[2] if len(err) > 2 else ""
            if code not in (0, _TOPIC_EXISTS):
                raise PublishError(f"create topic {name}: error {code} {msg or ''}".strip())

    async def delete_topic(self, name: str) -> None:
        admin = await self._admin_client()
        resp = await self._call(f"delete topic {name}", admin.delete_topics([name]))
        for err in getattr(resp, "topic_error_codes", ()):
            if err[1] not in (0, _UNKNOWN_TOPIC):
                raise PublishError(f"delete topic {name}: error {err[1]}")

    async def describe_groups(self) -> list[GroupInfo]:
        admin = await self._admin_client()
        listed = await self._call("list groups", admin.list_consumer_groups())
        out = []
        for name in sorted({g[0] for g in listed}):
            state, members = "Unknown", 0
            try:
                # One group per request: some brokers drop the connection on a
                # group they cannot describe, which must not hide the others.
                (resp,) = await _within(admin.describe_consumer_groups([name]), 10)
                for g in resp.groups:
                    state, members = g[2], len(g[5])
            except Exception as exc:
                log.debug("describe group %s: %r", name, exc)
            lag = await self.group_lag(name)
            out.append(GroupInfo(name, tuple(sorted({p.topic for p in lag})), members, state,
                                 tuple(lag)))
        return out

    async def group_lag(self, group: str) -> list[PartitionLag]:
        kw = self._kwargs(_CONSUMER_PARAMS, _CONSUMER_DEFAULTS)
        # A consumer that carries the group id but never joins: it can read the
        # group's commits (OffsetFetch) without disturbing its members.
        probe = AIOKafkaConsumer(**{**kw, "group_id": group, "enable_auto_commit": False})
        try:
            await _within(probe.start(), self.connect_timeout)
            committed: dict[TopicPartition, int | None] = {}
            for t in await self._topics():
                tps = [TopicPartition(t.name, p) for p in range(t.partitions)]
                offs = [await _within(probe.committed(tp), 10) for tp in tps]
                if any(o is not None and o >= 0 for o in offs):
                    committed.update(
                        (tp, o if o is not None and o >= 0 else None)
                        for tp, o in zip(tps, offs, strict=True)
                    )
            ends = await self._end_offsets(probe, committed)
            starts = await _within(probe.beginning_offsets(list(committed)), 10)
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, f"lag of group {group}")
        finally:
            await _bounded_stop(probe)
        out = []
        for tp in sorted(committed):
            c = committed[tp]
            base = c if c is not None else starts.get(tp, 0)
            out.append(PartitionLag(tp.topic, tp.partition, c, ends[tp], max(0, ends[tp] - base)))
        return out

    @staticmethod
    async def _end_offsets(
        probe: AIOKafkaConsumer, committed: dict[TopicPartition, int | None]
    ) -> dict[TopicPartition, int]:
        """End offsets, taking the fetch high watermark where it is larger.

        Some Kafka-protocol brokers answer ListOffsets(latest) with the start of
        the last record batch + 1; the high watermark in a fetch response is
        always right, so read one record per partition and take the larger.
        """
        tps = list(committed)
        if not tps:
            return {}
        ends = dict(await _within(probe.end_offsets(tps), 10))
        probe.assign(tps)
        for tp in tps:
            probe.seek(tp, committed[tp] or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while loop.time() < deadline and any(probe.highwater(tp) is None for tp in tps):
            await probe.getmany(timeout_ms=200, max_records=1)
        for tp in tps:
            ends[tp] = max(ends.get(tp, 0), probe.highwater(tp) or 0)
        return ends


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sub: _KafkaSubscription) -> None:
        self.sub = sub

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sub.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class _KafkaSubscription(Subscription):
    def __init__(self, backend: KafkaBackend, consumer: AIOKafkaConsumer, group: str | None):
        self.backend = backend
        self.consumer = consumer
        self.group = group
        self.listener = _Listener(self)
        self.epoch = 0
        # Offsets handed out, acknowledged and due for commit; ownership by epoch.
        self._ledger: PartitionLedger[TopicPartition] = PartitionLedger()
        # Commits go in the background, one at a time (the ledger's to_commit merges acks
        # meanwhile). Flushed before a revocation and at close.
        self._committer: asyncio.Task[None] | None = None
        self._sending = False  # the committer is waiting for the broker (not between commits)
        self._flushing = 0  # flushes waiting for the committer's commit in flight
        self._pacer = CommitPacer()  # on the loop's clock
        self._closed = False

    def owns(self, delivery: Delivery) -> bool:
        return self._ledger.owns(delivery)

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Seek each partition back to its lowest nacked offset: Kafka redelivers from
        there (the records after it in that partition too: at-least-once)."""
        moved: dict[TopicPartition, int] = {}
        for tp, offset in self._ledger.lowest(deliveries).items():
            try:
                self.consumer.seek(tp, offset)
            except Exception as exc:  # the partition moved on meanwhile: its new owner reads it
                log.debug("nack: cannot seek %s: %r", tp, exc)
                continue
            moved[tp] = offset
        # A new epoch: the Consumer drops what it buffered past the rewind.
        self.epoch = self._ledger.rewound(moved)

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        # Everything acknowledged was committed at ack time; what was not will be
        # read again by the new owner. Forget the rest and tell the Consumer.
        try:
            await self._flush(only=revoked)
        finally:
            # Even if that commit failed: what was fetched from these partitions is
            # stale now (the new owner reads it again from the last commit).
            self.epoch = self._ledger.forget(revoked)

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        try:
            # No cancel_safe here: records getmany returned must reach the bookkeeping
            # below (the Consumer keeps them if a swallowed cancellation shows up after).
            data = await self.consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
        except Exception as exc:
            _raise(exc, "fetch")
        out: list[Delivery] = []
        track = self._ledger.handed_out if self.group is not None else None
        epoch = self.epoch
        for tp, recs in data.items():
            if track is not None:
                track(tp).extend([r.offset for r in recs])
            topic, part = tp.topic, tp.partition
            position = (tp, epoch)  # one per partition and fetch: ack() folds runs of it
            # A list comprehension: cheaper per record than a generator fed to extend.
            out += [Delivery(topic, part, r.offset, r.value, r.key,
                             tuple(r.headers) if r.headers else None, position)
                    for r in recs]
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Fold acknowledgements into the ledger; the background committer sends them."""
        if self.group is None or not deliveries:
            return
        self._ledger.ack(deliveries)
        if self._ledger.to_commit:
            self._start_committer()

    def _start_committer(self) -> None:
        if not self._closed and (self._committer is None or self._committer.done()):
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_pending(), name="mlops_async.kafka.commit")

    async def _commit_pending(self) -> None:
        loop = asyncio.get_running_loop()
        ledger, pacer = self._ledger, self._pacer
        while ledger.to_commit:
            delay = pacer.wait(loop.time())  # acks made meanwhile merge into the next commit
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # a flush may have sent them meanwhile
            offsets = ledger.take()
            pacer.sent(loop.time())
            self._sending = True
            try:
                await self._commit(offsets)
            except BusError as exc:
                ledger.restore(offsets)  # sent again with the next commit
                log.warning("commit deferred: %s", exc)
                return
            finally:
                self._sending = False
            if self._flushing:
                return  # flushes wait for this commit and send what is pending themselves

    async def _flush(self, only: set[TopicPartition] | None = None) -> None:
        """Commit what was acknowledged (of ``only``'s partitions) and wait for the broker."""
        try:
            committer = self._committer
            if committer is not None and not committer.done():
                if self._sending:  # a commit is on its way: ours goes after it, never before
                    self._flushing += 1  # the committer stops after it
                    try:
                        await asyncio.wait([committer])  # a failure goes back in the ledger
                    finally:
                        self._flushing -= 1
                else:  # between commits: what it would send goes now, with ours
                    committer.cancel()
                    await asyncio.gather(committer, return_exceptions=True)
            offsets = self._ledger.take(only)
            if offsets:
                await self._commit(offsets)
        finally:
            # Acks the committer stopped above would have sent (other partitions', or all
            # of them if this flush was cancelled) get a committer again.
            if self._ledger.to_commit:
                self._start_committer()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            async with asyncio.timeout(self.backend.publish_timeout):
                await self.consumer.commit(
                    {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced: those partitions belong to someone else now,
            # who will read them from the previous commit (duplicates, never loss).
            log.warning("commit skipped after a rebalance (%s); records may be redelivered", exc)
        except Exception as exc:
            _raise(exc, "commit")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.backend._subs.discard(self)
        try:
            await self._flush()
        except BusError as exc:  # not committed: read again by the next owner
            log.warning("final commit failed: %s; records may be redelivered", exc)
        finally:
            if self._committer is not None and not self._committer.done():
                self._committer.cancel()
                await asyncio.gather(self._committer, return_exceptions=True)
        await _bounded_stop(self.consumer)


_NO_HEADERS: list[tuple[str, bytes]] = []  # read, never written, by the record builder


def _fill(batch: Any, records: Sequence[Record], start: int) -> int:
    """Append ``records[start:]`` to an aiokafka batch until it is full; how many went in.

    The batch's record builder (aiokafka's C extension when it is built) is
    called directly: ``BatchBuilder.append``, the public wrapper around it,
    costs as much again per record in Python (keywords, a serializer hop) and
    the producer sets no serializers for it to apply. A batch without that
    builder (another aiokafka) goes through the public method.
    """
    builder = getattr(batch, "_builder", None)
    if builder is None or not hasattr(batch, "_relative_offset") or not hasattr(batch, "_closed"):
        added = 0
        for r in islice(records, start, None):
            headers = list(r.headers) if r.headers else []
            if batch.append(key=r.key, value=r.value, timestamp=None, headers=headers) is None:
                break
            added += 1
        return added
    if batch._closed:  # full already: BatchBuilder.append would refuse it too
        return 0
    append = builder.append
    n: int = batch._relative_offset
    first = n
    for r in islice(records, start, None):
        h = r.headers
        if append(n, None, r.key, r.value, list(h) if h else _NO_HEADERS) is None:
            batch.close()  # full: as BatchBuilder.append leaves it
            break
        n += 1
    batch._relative_offset = n
    return n - first
