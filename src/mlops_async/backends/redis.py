"""Redis Streams, through redis.asyncio (the only module that imports redis-py).

``redis://[user:password@]host:6379/0`` (``rediss://`` for TLS). One stream per
topic, named ``<key_prefix><topic>`` (prefix ``mlops:`` by default).

Publishing: each batch is one round trip: a Lua script that runs ``XADD ...
MAXLEN ~ n`` for every record of a stream (one call per stream, pipelined).
Retention is approximate trimming to ``maxlen`` entries per stream (default
1,000,000). Trimming deletes the oldest entries whether or not a group has
acknowledged them: an entry trimmed while pending cannot be redelivered, and
such losses are counted in ``trimmed_pending`` (Redis >= 7 reports them).

Consuming in a group: ``XGROUP CREATE ... MKSTREAM`` at ``$`` (latest) or
``0`` (earliest); each consumer instance has a unique name. A consumer first
re-reads its own pending entries, then takes over entries that other
consumers left pending for longer than ``claim_idle_ms`` (``XAUTOCLAIM``),
then reads new ones (``XREADGROUP ... >``). Re-read and claimed entries carry
Redis's delivery count (``Delivery.attempts``): the Consumer dead-letters an
entry handed out more than ``max_deliveries`` times instead of looping forever.
``XACK`` is sent in batches, only for
entries the Consumer acknowledged. A consumer that closes hands its
unfinished entries back at once (it marks them idle so the next claim takes
them). Without a group: ``XREAD`` from the last id seen (broadcast).

Read-ahead: a group subscription holds two pooled connections, one for its
``XREADGROUP`` and one for its ``XACK`` commands (packed here: ids are bytes
already). An ``XACK`` is written when the Consumer acknowledges and its reply
is read with the next one (or at close): an ``XACK`` whose reply is lost is
written again, and its entries are never re-read meanwhile. When a batch is
handed out, the next ``XREADGROUP`` (same size) is sent at once and its reply
is read by a task, so the server's work and the round trip overlap with the
Consumer's decoding of the batch. One read at most
is in flight, so a consumer holds up to twice ``prefetch`` entries read and not
acknowledged (its buffer and that read), all pending on its name: a crash leaves
them for the next claim, a close hands them back. A caller cancelled while the
read is in flight leaves it running for the next fetch; a reply that is lost
(connection dropped, read cancelled) is read again from the pending list.

redis-py traps guarded here: ``BLOCK`` always stays below the socket timeout
(a block at or above it fails the read); the connection pool is bounded and
blocking; a command cancelled mid-flight has its connection dropped by
redis-py, so no reply reaches the wrong caller (tested). A retried ``XADD``
whose first reply was lost can add the entry twice: message ids tell
duplicates apart.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Sequence
from itertools import groupby
from typing import Any, NoReturn, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.commands.core import AsyncScript

from redis import exceptions as rex

from ..endpoint import redact, split_url
from ..errors import (
    AuthenticationError,
    BusClosed,
    BusError,
    BusUnavailable,
    ConfigurationError,
    PublishError,
)
from ..metrics import redis_round_trips
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
    cancel_safe,
    decode_headers,
    encode_headers,
    reraise,
)

__all__ = ["RedisBackend"]

log = logging.getLogger("mlops_async.redis")
T = TypeVar("T")


# One script call adds a whole batch to a stream: a single command and a one-integer
# reply instead of one XADD and one parsed id per record (measured ~3.5x faster
# than a pipeline of XADDs from redis-py). ARGV[1] is MAXLEN (0: no trimming).
_ADD_PLAIN = """
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV do
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'v', ARGV[i])
  else
    redis.call('XADD', KEYS[1], '*', 'v', ARGV[i])
  end
end
return #ARGV - 1
"""
# The same with (value, key, headers) triples; an empty string means "absent".
_ADD_FULL = """
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local fields = {'v', ARGV[i]}
  if ARGV[i + 1] ~= '' then table.insert(fields, 'k'); table.insert(fields, ARGV[i + 1]) end
  if ARGV[i + 2] ~= '' then table.insert(fields, 'h'); table.insert(fields, ARGV[i + 2]) end
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(fields))
  else
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
end
return (#ARGV - 1) / 3
"""

_LIBRARY_OPTIONS = {
    "key_prefix": "mlops:",
    "maxlen": 1_000_000,
    "claim_idle_ms": 30_000,
    "claim_interval": 1.0,
    "consumer_name": None,
    "max_connections": 32,
    "pool_timeout": 10.0,
}
_DEFAULT_SOCKET_TIMEOUT = 10.0
# What redis-py's connections take (plus the two the backend refuses with a reason).
_CONNECTION_OPTIONS = frozenset(
    name
    for cls in (AbstractConnection, Connection, SSLConnection)
    for name in inspect.signature(cls.__init__).parameters
) - {"self", "kwargs", "host", "port", "db"} | {
    "decode_responses", "connection_pool", "ssl"}


def _auth(what: str, exc: BaseException) -> BusError:
    return AuthenticationError(f"{what}: the server refused the credentials ({exc})")


# How redis-py's errors read as ours; anything else propagates unchanged. The
# credential refusals come first: redis-py's AuthenticationError is a
# ConnectionError, but retrying with the same password never helps.
_ERRORS: ErrorMap = (
    ((rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError,
      rex.AuthorizationError, rex.NoPermissionError), _auth),
    (lambda e: isinstance(e, rex.ResponseError)
     and str(e).startswith(("WRONGPASS", "NOAUTH")), _auth),
    ((rex.ConnectionError, rex.TimeoutError, OSError, TimeoutError), BusUnavailable),
    ((rex.BusyLoadingError, rex.TryAgainError, rex.ReadOnlyError), BusUnavailable),
    (rex.RedisError, PublishError),  # the server refused the command
)


def _raise(exc: BaseException, what: str) -> NoReturn:
    """Raise our error for ``exc`` (the driver's chained), or ``exc`` itself if unlisted."""
    reraise(exc, what, _ERRORS)


class RedisBackend(Backend):
    """A Redis server; one instance (one bounded connection pool) per client."""

    scheme = "redis"

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        lib = {k: options.pop(k, default) for k, default in _LIBRARY_OPTIONS.items()}
        self.prefix: str = lib["key_prefix"]
        self.maxlen: int | None = lib["maxlen"]
        self.claim_idle_ms = int(lib["claim_idle_ms"])
        self.claim_interval = float(lib["claim_interval"])
        self.consumer_name: str | None = lib["consumer_name"]
        self._round_trips = redis_round_trips()
        for owned in ("decode_responses", "connection_pool"):
            if owned in options:
                raise ConfigurationError(f"{owned} cannot be set: the backend reads raw bytes")
        _, creds, params = split_url(url)
        if creds is not None and creds.password is None and not (
            "password" in options or "password" in params
        ):
            raise ConfigurationError(
                "a Redis URL with a user needs a password: redis://user:password@host:6379/0 "
                "(or redis://:password@host:6379/0 for the default user)"
            )
        options.setdefault("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
        options.setdefault("socket_connect_timeout", 5.0)
        options.setdefault("health_check_interval", 30)
        self.socket_timeout = float(options["socket_timeout"] or _DEFAULT_SOCKET_TIMEOUT)
        try:
            self._pool = BlockingConnectionPool.from_url(
                url, max_connections=int(lib["max_connections"]), timeout=lib["pool_timeout"],
                **options,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad Redis URL or option: {redact(str(exc))}") from None
        self.redis: Redis | None = None
        self._add_plain: AsyncScript | None = None
        self._add_full: AsyncScript | None = None
        self.trimmed_pending = 0
        self._subs: set[_RedisSubscription] = set()

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset(_LIBRARY_OPTIONS) | _CONNECTION_OPTIONS

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        return cls(url, **options)

    def __repr__(self) -> str:  # never shows the password
        kw = self._pool.connection_kwargs
        return f"RedisBackend({kw.get('host')}:{kw.get('port')}/{kw.get('db', 0)})"

    def key(self, topic: str) -> str:
        return self.prefix + topic

    def topic_of(self, key: bytes | str) -> str:
        k = key.decode() if isinstance(key, bytes) else key
        return k[len(self.prefix):]

    def block_ms(self, timeout: float) -> int:
        """A BLOCK that always ends before the socket timeout would fire."""
        return max(1, min(int(timeout * 1000), int((self.socket_timeout - 1.0) * 1000)))

    async def connect(self) -> None:
        try:
            await self._client().ping()
        except Exception as exc:
            _raise(exc, f"cannot connect to {self!r}")

    async def close(self) -> None:
        for sub in list(self._subs):
            await sub.close()
        redis, self.redis = self.redis, None
        self._add_plain = self._add_full = None
        if redis is not None:
            try:
                await redis.aclose()
            finally:
                await self._pool.disconnect()

    def _client(self) -> Redis:
        if self.redis is None:
            redis = Redis(connection_pool=self._pool)
            # Stream reads come back as the parser built them (nested lists):
            # redis-py's per-entry tuple and dict conversion costs more than the
            # read itself on large batches, and _deliveries needs neither.
            for command in ("XREAD", "XREADGROUP"):
                redis.set_response_callback(command, _raw_reply)
            self.redis = redis
        return self.redis

    async def _run(self, what: str, coro: Any) -> Any:
        op = _operation(what)
        if op is None or self._round_trips is None:
            return await self._call(what, coro)
        t0 = time.perf_counter()
        try:
            return await self._call(what, coro)
        finally:
            self._round_trips.labels(operation=op).observe(time.perf_counter() - t0)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await cancel_safe(coro)
        except BusError:
            raise
        except Exception as exc:
            _raise(exc, what)

    async def _connection(self) -> AbstractConnection:
        """A connected connection from the pool (give it back with ``_pool.release``)."""
        get: Any = self._pool.get_connection  # untyped in redis-py
        conn: AbstractConnection = await get()
        return conn

    async def _execute_packed(self, commands: list[bytes]) -> list[Any]:
        """Commands packed by the caller (``_pack``), pipelined on one pooled connection.

        redis-py's generic packing re-encodes and re-joins every argument; acks of
        a thousand ids, already bytes, are packed here at a fraction of that cost.
        """
        conn = await self._connection()
        try:
            return await _send_packed(conn, commands)
        finally:
            await self._pool.release(conn)

    # -- publishing -----------------------------------------------------------

    async def publish(self, records: Sequence[Record]) -> None:
        redis = self._client()
        if self._add_plain is None or self._add_full is None:
            self._add_plain = redis.register_script(_ADD_PLAIN)
            self._add_full = redis.register_script(_ADD_FULL)
        maxlen = self.maxlen or 0
        by_topic: dict[str, list[Record]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        calls: list[tuple[AsyncScript, str, list[Any]]] = []
        for topic, recs in by_topic.items():
            if all(r.key is None and not r.headers for r in recs):
                calls.append((self._add_plain, self.key(topic), [maxlen, *(r.value for r in recs)]))
            else:
                args: list[Any] = [maxlen]
                for r in recs:
                    headers = encode_headers(r.headers) if r.headers else b""
                    args += (r.value, r.key or b"", headers)
                calls.append((self._add_full, self.key(topic), args))
        what = f"publishing {len(records)} record(s)"
        if len(calls) == 1:
            script, key, args = calls[0]
            await self._run(what, script(keys=[key], args=args))
            return
        pipe = redis.pipeline(transaction=False)
        for script, key, args in calls:
            await script(keys=[key], args=args, client=pipe)
        await self._run(what, pipe.execute())

    # -- consuming ------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        redis = self._client()
        keys = [self.key(t) for t in topics]
        sub: _RedisSubscription
        if group is None:
            last: dict[str, str] = {}
            for k in keys:
                if auto_offset_reset == "earliest":
                    last[k] = "0-0"
                else:
                    top = await self._run("read stream end", redis.xrevrange(k, count=1))
                    last[k] = top[0][0].decode() if top else "0-0"
            sub = _BroadcastSubscription(self, keys, last)
        else:
            start = "0" if auto_offset_reset == "earliest" else "$"
            for k in keys:
                try:
                    await redis.xgroup_create(k, group, id=start, mkstream=True)
                except rex.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        _raise(exc, f"create group {group}")
                except Exception as exc:
                    _raise(exc, f"create group {group}")
            name = self.consumer_name or (
                f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            )
            sub = _GroupSubscription(self, keys, group, name)
        self._subs.add(sub)
        return sub

    def _deliveries(self, key: bytes | str, entries: list[Any]) -> list[Delivery]:
        """Entries as ``[id, [field, value, ...]]`` (raw) or ``(id, {field: value})``.

        Never raises on entry content: an entry whose fields are not ours
        comes out with ``fault`` set and every field kept in ``raw``.
        ``position`` is the entry id as bytes (XACK takes it as it is); the
        stream key follows from ``topic``.
        """
        topic = self.topic_of(key)
        # What send() writes without key or headers, as the parser built it: [b"v", value].
        plain = [Delivery(topic, 0, eid.decode(), fields[1], None, None, eid)
                 for eid, fields in entries
                 if fields.__class__ is list and len(fields) == 2 and fields[0] == b"v"]
        if len(plain) == len(entries):
            return plain
        out: list[Delivery] = []
        append = out.append
        for eid, fields in entries:
            if fields.__class__ is list:
                n = len(fields)
                if n == 2 and fields[0] == b"v":
                    append(Delivery(topic, 0, eid.decode(), fields[1], None, None, eid))
                    continue
                if n == 4 and fields[0] == b"v" and fields[2] == b"k":  # with a key
                    append(Delivery(topic, 0, eid.decode(), fields[1], fields[3], None, eid))
                    continue
            elif fields is None:  # entry deleted (trimmed) while pending
                continue
            append(_envelope(topic, eid.decode(), fields, eid))
        return out

    # -- admin ----------------------------------------------------------------

    async def _stream_keys(self) -> list[bytes]:
        redis = self._client()
        keys: list[bytes] = []
        async for k in redis.scan_iter(match=self.prefix + "*", count=1000, _type="stream"):
            keys.append(k)
        return sorted(keys)

    async def list_topics(self) -> list[TopicInfo]:
        async def run() -> list[TopicInfo]:
            redis = self._client()
            out = []
            for k in await self._stream_keys():
                out.append(TopicInfo(self.topic_of(k), 1, int(await redis.xlen(k))))
            return out

        result: list[TopicInfo] = await self._run("list topics", run())
        return result

    async def create_topic(
        self, name: str, partitions: int = 1, replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        # A stream has no partitions; an empty one is made by creating and
        # dropping a placeholder group.
        redis = self._client()
        key = self.key(name)

        async def run() -> None:
            if await redis.exists(key):
                return
            await redis.xgroup_create(key, "__mlops_create__", id="$", mkstream=True)
            await redis.xgroup_destroy(key, "__mlops_create__")

        await self._run(f"create topic {name}", run())

    async def delete_topic(self, name: str) -> None:
        await self._run(f"delete topic {name}", self._client().delete(self.key(name)))

    async def describe_groups(self) -> list[GroupInfo]:
        async def run() -> list[GroupInfo]:
            redis = self._client()
            groups: dict[str, dict[str, Any]] = {}
            for k in await self._stream_keys():
                for g in await redis.xinfo_groups(k):
                    name = g["name"].decode()
                    info = groups.setdefault(name, {"topics": [], "members": 0})
                    info["topics"].append(self.topic_of(k))
                    info["members"] += int(g["consumers"])
            out = []
            for name, info in sorted(groups.items()):
                lag = await self.group_lag(name)
                out.append(GroupInfo(name, tuple(info["topics"]), info["members"],
                                     "Stable" if info["members"] else "Empty", tuple(lag)))
            return out

        result: list[GroupInfo] = await self._run("describe groups", run())
        return result

    async def group_lag(self, group: str) -> list[PartitionLag]:
        async def run() -> list[PartitionLag]:
            redis = self._client()
            out = []
            for k in await self._stream_keys():
                for g in await redis.xinfo_groups(k):
                    if g["name"].decode() != group:
                        continue
                    stream = await redis.xinfo_stream(k)
                    end = int(stream.get("entries-added") or stream["length"])
                    read = g.get("entries-read")
                    lag = g.get("lag")
                    pending = int(g["pending"])
                    committed = None if read is None else int(read) - pending
                    if lag is None:  # Redis could not compute it (trimmed history)
                        lag = end - (committed or 0)
                    out.append(PartitionLag(self.topic_of(k), 0, committed, end,
                                            int(lag) + pending, pending))
            return out

        result: list[PartitionLag] = await self._run(f"lag of group {group}", run())
        return result


class _RedisSubscription(Subscription):
    def __init__(self, backend: RedisBackend, keys: list[str]) -> None:
        self.backend = backend
        self.keys = keys
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self.backend._subs.discard(self)


class _BroadcastSubscription(_RedisSubscription):
    def __init__(self, backend: RedisBackend, keys: list[str], last: dict[str, str]) -> None:
        super().__init__(backend, keys)
        self.last: dict[Any, Any] = last

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        be = self.backend
        reply = await be._run("read", be._client().xread(
            self.last, count=max_records, block=be.block_ms(timeout)))
        out: list[Delivery] = []
        for key, entries in _streams(reply):
            ds = be._deliveries(key, entries)
            if entries:
                self.last[key.decode()] = entries[-1][0].decode()
            out.extend(ds)
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None  # nothing to acknowledge without a group


class _GroupSubscription(_RedisSubscription):
    cheap_ack = True  # an XACK round trip overlaps the read-ahead in flight
    counts_deliveries = True  # re-read and claimed entries carry XPENDING's count
    releases = True  # marked idle, as close() hands entries back: the next claim takes them

    def __init__(self, backend: RedisBackend, keys: list[str], group: str, name: str) -> None:
        super().__init__(backend, keys)
        self.group = group
        self.name = name
        self._own_pending = True  # first re-read what this name left unacknowledged
        self._next_claim = 0.0
        self._claim_cursor = dict.fromkeys(keys, "0-0")
        # Entry ids handed to the Consumer and not yet acked or nacked: re-reading this
        # name's pending entries (after a lost reply) must not hand them out twice.
        self._handed: set[bytes] = set()
        self._group_b = group.encode()
        keys_b = [k.encode() for k in keys]
        self._key_of = {backend.topic_of(k): kb for k, kb in zip(keys, keys_b, strict=True)}
        self._read_head = (b"XREADGROUP", b"GROUP", self._group_b, name.encode(), b"COUNT")
        self._read_tail = (b"STREAMS", *keys_b, *([b">"] * len(keys)))
        # XREADGROUP runs on a connection of its own, taken from the pool at the first
        # read and held until close: at most one read in flight (``_ahead``), started
        # when a batch is handed out so that the server's work and the round trip
        # overlap with the Consumer's decoding of that batch.
        self._conn: AbstractConnection | None = None
        self._ahead: asyncio.Task[list[Delivery]] | None = None
        # What a read brought beyond the caller's max_records (read, not handed out).
        self._spill: list[Delivery] = []
        self._fetching = asyncio.Lock()  # one fetch at a time: one taker per reply
        self._ack_conn: AbstractConnection | None = None
        self._acking = asyncio.Lock()
        # XACKs written, reply not read yet; and XACKs whose reply was lost (sent again).
        self._unconfirmed: list[tuple[list[bytes], list[bytes]]] = []
        self._lost_acks: list[tuple[list[bytes], list[bytes]]] = []

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise BusClosed("subscription is closed")
        async with self._fetching:
            if self._closed:  # closed while this call waited for another one
                return []
            return await self._fetch(max_records, timeout)

    async def _fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        if self._own_pending:
            # A reply may have been lost: whatever was read and not handed out is
            # pending on this name, and is read again from the pending list.
            await self._drop_ahead()
            out = await self._lost_reply_guard(self._reread_pending(max_records))
            if out:
                return self._hand(await self._lost_reply_guard(self._screen(out)))
            self._own_pending = False
        if self._spill:
            await self._trim_spill(max_records)
            batch, self._spill = self._spill[:max_records], self._spill[max_records:]
            return self._hand(batch)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self.backend.claim_interval
            claimed = await self._lost_reply_guard(self._claim(max_records))
            if claimed:
                return self._hand(claimed)
        return await self._read(max_records, timeout)

    async def _lost_reply_guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (BusUnavailable, asyncio.CancelledError):
            self._reread_own()
            raise

    def _reread_own(self) -> None:
        # A reply lost with the connection (or to a cancellation) leaves entries
        # pending on this name: read them again first, at the next fetch.
        self._own_pending = True

    async def _read(self, max_records: int, timeout: float) -> list[Delivery]:
        """New entries: the read already in flight if there is one, else a fresh one."""
        task = self._ahead
        fresh = task is None
        if task is None:
            task = await self._start_read(max_records, timeout)
            if self._closed:  # closed while the read was being sent
                task.cancel()
        elif not task.done():
            # Sent at the last fetch, maybe with a longer BLOCK: wait at most timeout
            # for it; it stays in flight for the next call otherwise.
            await asyncio.wait((task,), timeout=timeout)
            if not task.done():
                return []
        me = asyncio.current_task()
        cancels = me.cancelling() if me is not None else 0
        try:
            # Shielded: a cancelled caller leaves the read running, and its reply
            # is taken by the next fetch (no connection dropped, nothing re-read).
            batch = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the read itself was stopped (close): reply lost
                self._ahead = None
                self._reread_own()
                if self._closed and (me is None or me.cancelling() <= cancels):
                    return []
            raise
        except BaseException:
            self._ahead = None
            self._reread_own()
            raise
        self._ahead = None
        if not batch and not fresh:
            # An earlier read that found nothing: read now, waiting up to timeout.
            return await self._read(max_records, timeout)
        if len(batch) > max_records:  # a read-ahead sized by an earlier, larger call
            self._spill = batch
            await self._trim_spill(max_records)  # not handed out: kept in _spill if it fails
            batch, self._spill = self._spill[:max_records], self._spill[max_records:]
        ahead = max_records if self.read_ahead is None else self.read_ahead
        if batch and ahead > 0 and not self._closed:
            # The next read goes out now, before this batch is used: the server
            # serves it while the Consumer decodes this one.
            try:
                await self._start_read(ahead, timeout)
            except BusUnavailable:
                pass  # raised by the next fetch, after it re-read the pending list
            except asyncio.CancelledError:
                # Not handed out: the next fetch hands it out, or re-reads it from
                # the pending list if the read's reply may be lost.
                self._spill[:0] = batch
                raise
        return self._hand(batch)

    async def _start_read(self, count: int, timeout: float) -> asyncio.Task[list[Delivery]]:
        """Send an XREADGROUP on the reader's connection; its reply is read by a task."""
        be = self.backend
        command = _pack(*self._read_head, b"%d" % count, b"BLOCK", b"%d" % be.block_ms(timeout),
                        *self._read_tail)
        me = asyncio.current_task()
        cancels = me.cancelling() if me is not None else 0
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = await be._connection()
            await conn.send_packed_command(command)
        except BaseException as exc:
            # redis-py dropped the connection; the command may have reached the server.
            self._reread_own()
            if isinstance(exc, Exception):
                _raise(exc, "read")
            raise
        # From here on the reply belongs to this task, whatever happens to the caller.
        task = asyncio.get_running_loop().create_task(
            self._reply(conn), name="mlops_async.redis.read")
        task.add_done_callback(_retrieve)
        self._ahead = task
        if me is not None and me.cancelling() > cancels:
            # Swallowed by redis-py's wait_for (CPython 3.11): let it through; the
            # read goes on, and the next fetch takes its reply.
            raise asyncio.CancelledError
        return task

    async def _reply(self, conn: AbstractConnection) -> list[Delivery]:
        be = self.backend
        reply = await be._run("read", conn.read_response())
        return [d for key, entries in _streams(reply) for d in be._deliveries(key, entries)]

    async def _drop_ahead(self) -> None:
        """Stop the read in flight; what it read stays pending on this name."""
        self._spill = []
        task, self._ahead = self._ahead, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))

    async def _trim_spill(self, taken: int) -> None:
        """Hand back what was read ahead beyond the Consumer's window (it became slower):
        of ``_spill``, the ``taken`` about to be handed out and ``read_ahead`` more stay."""
        if self.read_ahead is None:
            return
        keep = taken + self.read_ahead
        if len(self._spill) > keep:
            extra, self._spill = self._spill[keep:], self._spill[:keep]
            try:
                await self.nack(extra)
            except BaseException as exc:
                self._spill += extra  # still pending here: handed out later instead
                if not isinstance(exc, BusUnavailable):
                    raise

    async def _give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Mark entries idle past ``claim_idle_ms`` (JUSTID keeps their delivery counts),
        so the next claim pass of any member takes them."""
        be = self.backend
        redis = be._client()
        by_key: dict[Any, list[Any]] = {}
        for d in deliveries:
            by_key.setdefault(be.key(d.topic), []).append(d.position)
        for key, ids in by_key.items():
            await be._run("nack", redis.xclaim(key, self.group, self.name, 0, ids,
                                               idle=be.claim_idle_ms + 1000, justid=True))
            self._handed.difference_update(ids)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        # As nack: any member's next claim takes them, this one's first of all (a
        # lone member reads them again before anything newer: order kept).
        await self.nack(deliveries)

    def _hand(self, deliveries: list[Delivery]) -> list[Delivery]:
        self._handed.update([d.position for d in deliveries])
        return deliveries

    async def _reread_pending(self, max_records: int) -> list[Delivery]:
        """This name's pending entries that were never handed out (their reply was lost
        with a connection or a cancellation), taken again with XCLAIM: an entry the
        Consumer still holds is neither re-delivered nor counted again."""
        be = self.backend
        redis = be._client()
        out: list[Delivery] = []
        for key in self.keys:
            start = "-"
            while len(out) < max_records:
                info = await be._run("pending", redis.xpending_range(
                    key, self.group, min=start, max="+", count=max_records,
                    consumername=self.name))
                if not info:
                    break
                ids = [p["message_id"] for p in info if p["message_id"] not in self._handed]
                if ids:
                    entries = await be._run("re-read pending", redis.xclaim(
                        key, self.group, self.name, 0, ids[: max_records - len(out)]))
                    out.extend(be._deliveries(key, entries))
                last = info[-1]["message_id"]
                start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        return out

    async def _claim(self, max_records: int) -> list[Delivery]:
        """Take over entries other consumers left pending past ``claim_idle_ms``."""
        be = self.backend
        redis = be._client()
        out: list[Delivery] = []
        for key in self.keys:
            reply = await be._run("claim", redis.xautoclaim(
                key, self.group, self.name, be.claim_idle_ms,
                start_id=self._claim_cursor[key], count=max_records))
            cursor, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                be.trimmed_pending += len(deleted)
                log.warning("%d pending entr(ies) of %s were trimmed before being processed",
                            len(deleted), key)
            self._claim_cursor[key] = cursor.decode() if isinstance(cursor, bytes) else cursor
            out.extend(be._deliveries(key, entries))
        return await self._screen(out) if out else out

    async def _screen(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Record how often each re-read or claimed entry was delivered (``attempts``).

        The Consumer decides what too many is (``max_deliveries``); this only
        reports the count Redis keeps.
        """
        be = self.backend
        redis = be._client()
        counts: dict[str, int] = {}
        by_key: dict[Any, list[Delivery]] = {}
        for d in deliveries:
            by_key.setdefault(be.key(d.topic), []).append(d)
        for key, ds in by_key.items():
            ids = [d.offset for d in ds]
            info = await be._run("pending info", redis.xpending_range(
                key, self.group, min=min(ids, key=_id_order), max=max(ids, key=_id_order),
                count=len(ds) * 4 + 10, consumername=self.name))
            for p in info:
                counts[p["message_id"].decode()] = int(p["times_delivered"])
        for d in deliveries:
            d.attempts = counts.get(str(d.offset), 0)
        return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.position for d in deliveries]
        if len(self._key_of) == 1:
            (key,) = self._key_of.values()
            commands = [_pack_xack(key, self._group_b, ids)]
        else:
            by_key: dict[bytes, list[bytes]] = {}
            for d in deliveries:
                by_key.setdefault(self._key_of[d.topic], []).append(d.position)
            commands = [_pack_xack(key, self._group_b, i) for key, i in by_key.items()]
        await self.backend._run("ack", self._send_acks(commands, ids))

    async def _send_acks(self, commands: list[bytes], ids: list[bytes]) -> None:
        """Write XACKs on a connection this subscription holds; their replies are read
        by the next ack (or close), so the server's work on them overlaps with the
        Consumer's next batch instead of being waited for here.

        Only entries the Consumer acknowledged are ever in an XACK. One written
        batch at most is unconfirmed; one whose reply is lost (connection dropped,
        caller cancelled) is written again with the next one (XACK is idempotent),
        and its entries count as held until confirmed, so never re-read meanwhile.
        """
        async with self._acking:
            if self._closed:
                # Closed: the held connection is gone, the pool serves (the Consumer
                # acknowledges what was processed before it closes the subscription).
                await self.backend._execute_packed(commands)
                self._handed.difference_update(ids)
                return
            conn = self._ack_conn
            if conn is None:
                conn = self._ack_conn = await self.backend._connection()
            await self._confirm_acks(conn)
            again, self._lost_acks = self._lost_acks, []
            sent = [*again, (commands, ids)]  # in the order of their replies
            try:
                await conn.send_packed_command(b"".join([c for cmds, _ in sent for c in cmds]))
            except BaseException:
                # redis-py dropped the connection: the earlier ones may not have gone
                # out either; the new ones raise, and the Consumer sends them again.
                self._lost_acks = again
                raise
            self._unconfirmed = sent

    async def _confirm_acks(self, conn: AbstractConnection) -> None:
        """Read the replies of the XACKs written last (arrived meanwhile, as a rule)."""
        unconfirmed, self._unconfirmed = self._unconfirmed, []
        for i, (commands, ids) in enumerate(unconfirmed):
            try:
                for _ in commands:
                    await conn.read_response()
            except rex.ResponseError as exc:  # the server refused it (the group is gone)
                await conn.disconnect()  # later replies unread: never reuse the connection
                self._lost_acks += unconfirmed[i + 1:]
                log.warning("acknowledging %d entr(ies) failed: %s", len(ids), exc)
                return
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                # The replies are lost with the connection: these XACKs are written
                # again, with the caller's, on a new one.
                self._lost_acks += unconfirmed[i:]
                log.debug("acknowledgements unconfirmed, sent again: %r", exc)
                return
            except BaseException:  # cancelled: the same, at the next ack
                self._lost_acks += unconfirmed[i:]
                raise
            self._handed.difference_update(ids)

    async def _flush_acks(self) -> None:
        """Confirm every XACK written (at close): lost ones are written once more."""
        conn = self._ack_conn
        if conn is not None and self._unconfirmed:
            try:
                await self._confirm_acks(conn)
            except Exception as exc:
                log.debug("confirming acknowledgements on close: %r", exc)
        lost, self._lost_acks = self._lost_acks, []
        for commands, ids in lost:
            try:
                await self.backend._execute_packed(commands)
                self._handed.difference_update(ids)
            except Exception as exc:
                log.warning("consumer closing: %d processed entr(ies) could not be "
                            "acknowledged and will be delivered again (%s)", len(ids), exc)

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Mark the entries idle so any member claims them at its next claim pass, and
        re-read them here at the next fetch."""
        if not deliveries:
            return
        await self._give_back(deliveries)
        self._next_claim = 0.0  # the next fetch claims them back (or another member does)

    async def close(self) -> None:
        if self._closed:
            return
        await super().close()
        be = self.backend
        # The read in flight first: what it read is pending, and handed back below.
        # A fetch waiting for that read returns [] once it is cancelled.
        if self._ahead is not None:
            self._ahead.cancel()
        async with self._fetching:
            await self._drop_ahead()
            conn, self._conn = self._conn, None
            if conn is not None:
                await be._pool.release(conn)
        async with self._acking:
            try:
                await self._flush_acks()
            finally:
                conn, self._ack_conn = self._ack_conn, None
                if conn is not None:
                    await be._pool.release(conn)
        # Hand unfinished entries back now rather than after claim_idle_ms: mark
        # them idle for that long (JUSTID keeps their delivery counts).
        try:
            redis = be._client()
            for key in self.keys:
                pending = await redis.xpending_range(key, self.group, min="-", max="+",
                                                     count=10_000, consumername=self.name)
                ids: list[Any] = [p["message_id"] for p in pending]
                if ids:
                    await redis.xclaim(key, self.group, self.name, 0, ids,
                                       idle=be.claim_idle_ms + 1000, justid=True)
                else:
                    await redis.xgroup_delconsumer(key, self.group, self.name)
        except Exception as exc:  # best effort: a claim after claim_idle_ms still works
            log.debug("releasing pending entries on close: %r", exc)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a read's failure as seen: the fetch that takes the read re-raises it, and a
    read nobody takes any more (closed, dropped) logs nothing at garbage collection."""
    if not task.cancelled():
        task.exception()


def _pack(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP), from arguments that are bytes already."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def _pack_xack(key: bytes, group: bytes, ids: list[bytes]) -> bytes:
    """``XACK key group id...``. Ids come in runs of one length (the sequence part of
    ``<ms>-<seq>`` grows a digit at 10, 100...): each run is joined in one go under
    one ``$<len>`` header rather than formatted id by id."""
    parts = [b"*%d\r\n$4\r\nXACK\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(ids) + 3, len(key), key, len(group), group)]
    for length, run in groupby(ids, len):
        size = b"$%d\r\n" % length
        parts += (size, (b"\r\n" + size).join(run), b"\r\n")
    return b"".join(parts)


async def _send_packed(conn: AbstractConnection, commands: list[bytes]) -> list[Any]:
    """Packed commands pipelined on ``conn``, their replies in order."""
    await conn.send_packed_command(commands[0] if len(commands) == 1 else b"".join(commands))
    replies: list[Any] = []
    try:
        for _ in commands:
            replies.append(await conn.read_response())
    except rex.ResponseError:
        # An error reply leaves the later replies unread: never reuse the connection.
        await conn.disconnect()
        raise
    return replies


def _envelope(topic: str, eid: str, fields: Any, position: Any) -> Delivery:
    """A Delivery from an entry's fields: ``v``, optional ``k`` and ``h``.

    Other fields are ignored, so a newer writer may add some without breaking
    older readers.
    """
    pairs = (
        list(zip(fields[::2], fields[1::2], strict=False))
        if isinstance(fields, list) else list(fields.items())
    )
    by_name = dict(pairs)
    fault = None
    headers = None
    if b"v" not in by_name:
        fault = f"stream entry has no 'v' field (fields: {_names(pairs)})"
    elif len(by_name) != len(pairs):
        fault = f"stream entry repeats a field (fields: {_names(pairs)})"
    elif b"h" in by_name:
        try:
            headers = decode_headers(by_name[b"h"]) or None
        except Exception as exc:  # foreign bytes: the whole entry goes to the dead letters
            fault = f"field 'h' is not mlops_async headers: {exc}"
    if fault is not None:
        return Delivery(topic, 0, eid, b"", by_name.get(b"k"), None, position, fault,
                        tuple(pairs))
    return Delivery(topic, 0, eid, by_name[b"v"], by_name.get(b"k"), headers, position)


def _names(pairs: list[tuple[bytes, bytes]]) -> str:
    return ", ".join(repr(k.decode("utf-8", "backslashreplace")) for k, _ in pairs[:10])


def _operation(what: str) -> str | None:
    """volley's Redis connector timings: read, write or delete (per round trip)."""
    if what.startswith("publishing"):
        return "write"
    if what in ("ack", "nack"):
        return "delete"
    if what in ("read", "claim", "re-read pending"):
        return "read"
    return None


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _streams(reply: Any) -> Any:
    """(stream, entries) pairs of a raw XREAD/XREADGROUP reply: a map or a list of pairs."""
    if not reply:
        return ()
    return reply.items() if isinstance(reply, dict) else reply


def _id_order(eid: str | int) -> tuple[int, int]:
    ms, _, seq = str(eid).partition("-")
    return int(ms), int(seq or 0)
