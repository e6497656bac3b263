"""A queue in PostgreSQL tables (asyncpg): ``postgresql://user@host:5432/db``.

A plugin backend, registered under ``postgresql://`` (and ``postgres://``) by
the ``mlops_async.backends`` entry point; it is also the worked example of
how to write one: subclass :class:`~mlops_async.backends.Backend` and
:class:`~mlops_async.backends.Subscription`, translate driver errors into
:class:`~mlops_async.errors.BusUnavailable` / ``PublishError``, and give the
class a ``from_url`` classmethod.

Tables (created on first use, prefix ``mlops_`` by default):

- ``messages(id bigserial, topic, key, value, headers, created_at)``: the log.
  Publishers of one topic take a transaction-scoped advisory lock, so ids
  commit in order within a topic and a reader never skips a late commit.
- ``cursors(grp, topic, position)``: the next id a consumer group hands out.
- ``inflight(grp, topic, id, owner, lease_until)``: handed out, not yet
  acknowledged. Members take new rows by advancing the group's cursor
  (``FOR UPDATE``) and take over expired leases of dead members with
  ``FOR UPDATE SKIP LOCKED``, so members never wait on each other's rows.
  Every fetch renews the leases its member holds: a member that stops
  fetching for longer than ``lease_seconds`` (a dead process, or one message
  processed for too long) has its rows handed to the others.

Consumers sleep on ``LISTEN`` and publishers ``NOTIFY``, so delivery is
immediate without polling (a slow poll remains as a safety net).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import socket
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import MissingDependency

try:
    import asyncpg
except ImportError as exc:  # the plugin names its own extra; the registry knows no plugin's
    raise MissingDependency(
        f"the postgresql:// backend needs {exc.name}: pip install 'mlops-async[postgres]'"
    ) from exc

from ..backends.base import (
    Backend,
    Delivery,
    ErrorMap,
    GroupInfo,
    OffsetReset,
    PartitionLag,
    Record,
    Subscription,
    TopicInfo,
    decode_headers,
    encode_headers,
    reraise,
)
from ..endpoint import redact
from ..errors import (
    AuthenticationError,
    BusError,
    BusUnavailable,
    ConfigurationError,
    PublishError,
)

__all__ = ["PostgresBackend"]

log = logging.getLogger("mlops_async.postgres")



def _auth(what: str, exc: BaseException) -> BusError:
    return AuthenticationError(f"{what}: the server refused the credentials ({exc})")


# How asyncpg's errors read as ours; anything else propagates unchanged.
_ERRORS: ErrorMap = (
    ((asyncpg.exceptions.InvalidPasswordError,
      asyncpg.exceptions.InvalidAuthorizationSpecificationError), _auth),
    ((OSError, TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError,
      asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.InterfaceError),
     BusUnavailable),
    (asyncpg.exceptions.PostgresError, PublishError),  # the server refused the statement
)


def _raise(exc: BaseException, what: str) -> NoReturn:
    """Raise our error for ``exc`` (the driver's chained), or ``exc`` itself if unlisted."""
    reraise(exc, what, _ERRORS)


class PostgresBackend(Backend):
    """Topics and consumer groups in three PostgreSQL tables."""

    scheme = "postgresql"

    def __init__(self, dsn: str, *, table_prefix: str = "mlops_", lease_seconds: float = 30.0,
                 maxlen: int | None = None, pool_size: int = 4, **connect_options: Any) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table_prefix):
            raise ConfigurationError(f"table_prefix must be a plain identifier: {table_prefix!r}")
        self.dsn = dsn
        self.prefix = table_prefix
        self.lease = lease_seconds
        self.maxlen = maxlen
        self.pool_size = pool_size
        self._connect_options = connect_options
        self.channel = f"{table_prefix}messages"
        self.pool: asyncpg.Pool | None = None
        self._subs: set[_PgSubscription] = set()

    @classmethod
    def option_names(cls) -> frozenset[str]:
        connect = frozenset(inspect.signature(asyncpg.connect).parameters) - {"dsn", "loop"}
        return frozenset({"table_prefix", "lease_seconds", "maxlen", "pool_size"}) | connect

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        return cls(url.replace("postgres://", "postgresql://", 1), **options)

    def __repr__(self) -> str:
        return f"PostgresBackend({redact(self.dsn)})"

    def t(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def connect(self) -> None:
        if self.pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size,
                                             timeout=10, **self._connect_options)
        except Exception as exc:
            _raise(exc, f"cannot connect to {self!r}")
        assert pool is not None
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Serialise schema creation between processes starting together.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.prefix)
                await conn.execute(f"""
                    CREATE TABLE IF NOT EXISTS {self.t('messages')} (
                        id bigserial PRIMARY KEY, topic text NOT NULL, key bytea,
                        value bytea NOT NULL, headers bytea,
                        created_at timestamptz NOT NULL DEFAULT now());
                    CREATE INDEX IF NOT EXISTS {self.t('messages_topic_id')}
                        ON {self.t('messages')} (topic, id);
                    CREATE TABLE IF NOT EXISTS {self.t('topics')} (topic text PRIMARY KEY);
                    CREATE TABLE IF NOT EXISTS {self.t('cursors')} (
                        grp text NOT NULL, topic text NOT NULL, position bigint NOT NULL,
                        PRIMARY KEY (grp, topic));
                    CREATE TABLE IF NOT EXISTS {self.t('inflight')} (
                        grp text NOT NULL, topic text NOT NULL, id bigint NOT NULL,
                        owner text NOT NULL, lease_until timestamptz NOT NULL,
                        deliveries int NOT NULL DEFAULT 1, PRIMARY KEY (grp, topic, id));
                """)
        except Exception as exc:
            await pool.close()
            _raise(exc, "creating tables")
        self.pool = pool

    async def close(self) -> None:
        for sub in list(self._subs):
            await sub.close()
        pool, self.pool = self.pool, None
        if pool is not None:
            async with asyncio.timeout(10):
                await pool.close()

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            await self.connect()
        assert self.pool is not None
        return self.pool

    async def publish(self, records: Sequence[Record]) -> None:
        pool = await self._pool()
        by_topic: dict[str, list[Record]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        try:
            async with pool.acquire() as conn, conn.transaction():
                for topic, recs in sorted(by_topic.items()):
                    # Ids of one topic commit in order: readers never skip a late commit.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                       self.prefix + topic)
                    await conn.executemany(
                        f"INSERT INTO {self.t('messages')} (topic, key, value, headers) "
                        "VALUES ($1, $2, $3, $4)",
                        [(topic, r.key, r.value,
                          encode_headers(r.headers) if r.headers else None) for r in recs],
                    )
                    if self.maxlen:
                        await conn.execute(
                            f"DELETE FROM {self.t('messages')} WHERE topic = $1 AND id <= "
                            f"(SELECT max(id) FROM {self.t('messages')} WHERE topic = $1) - $2",
                            topic, self.maxlen)
                    await conn.execute("SELECT pg_notify($1, $2)", self.channel, topic)
        except Exception as exc:
            _raise(exc, f"publishing {len(records)} record(s)")

    async def subscribe(self, topics: Sequence[str], *, group: str | None,
                        auto_offset_reset: OffsetReset) -> Subscription:
        pool = await self._pool()
        member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        private = group is None
        grp = group or f"__private__.{member}"
        try:
            async with pool.acquire() as conn:
                for topic in topics:
                    start = 0
                    if auto_offset_reset == "latest":
                        start = await conn.fetchval(
                            f"SELECT coalesce(max(id), 0) FROM {self.t('messages')} "
                            "WHERE topic = $1", topic)
                    await conn.execute(
                        f"INSERT INTO {self.t('cursors')} (grp, topic, position) "
                        "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", grp, topic, start)
            listener = await asyncpg.connect(self.dsn, timeout=10, **self._connect_options)
        except Exception as exc:
            _raise(exc, f"cannot subscribe to {list(topics)}")
        sub = _PgSubscription(self, list(topics), grp, member, private, listener)
        await listener.add_listener(self.channel, sub.notified)
        self._subs.add(sub)
        return sub

    # -- admin ----------------------------------------------------------------

    async def _q(self, what: str, sql: str, *args: Any) -> list[Any]:
        pool = await self._pool()
        try:
            return list(await pool.fetch(sql, *args))
        except Exception as exc:
            _raise(exc, what)

    async def list_topics(self) -> list[TopicInfo]:
        rows = await self._q("list topics", f"""
            SELECT t.topic, count(m.id) AS n FROM
              (SELECT topic FROM {self.t('topics')}
               UNION SELECT DISTINCT topic FROM {self.t('messages')}) t
            LEFT JOIN {self.t('messages')} m ON m.topic = t.topic
            GROUP BY t.topic ORDER BY t.topic""")
        return [TopicInfo(r["topic"], 1, int(r["n"])) for r in rows]

    async def create_topic(self, name: str, partitions: int = 1, replication: int = 1,
                           config: dict[str, str] | None = None) -> None:
        await self._q(f"create topic {name}", f"INSERT INTO {self.t('topics')} VALUES ($1) "
                      "ON CONFLICT DO NOTHING", name)

    async def delete_topic(self, name: str) -> None:
        for table in ("messages", "cursors", "inflight", "topics"):
            await self._q(f"delete topic {name}",
                          f"DELETE FROM {self.t(table)} WHERE topic = $1", name)

    async def group_lag(self, group: str) -> list[PartitionLag]:
        rows = await self._q(f"lag of group {group}", f"""
            SELECT c.topic, c.position,
                   (SELECT coalesce(max(id), 0) FROM {self.t('messages')} m
                     WHERE m.topic = c.topic) AS end_id,
                   (SELECT count(*) FROM {self.t('messages')} m
                     WHERE m.topic = c.topic AND m.id > c.position) AS unread,
                   (SELECT count(*) FROM {self.t('inflight')} i
                     WHERE i.grp = c.grp AND i.topic = c.topic) AS pending
            FROM {self.t('cursors')} c WHERE c.grp = $1 ORDER BY c.topic""", group)
        return [PartitionLag(r["topic"], 0, int(r["position"]), int(r["end_id"]),
                             int(r["unread"]) + int(r["pending"]), int(r["pending"]))
                for r in rows]

    async def describe_groups(self) -> list[GroupInfo]:
        rows = await self._q("describe groups", f"SELECT DISTINCT grp FROM {self.t('cursors')} "
                             "WHERE grp NOT LIKE '\\_\\_private\\_\\_.%' ORDER BY grp")
        out = []
        for r in rows:
            lag = await self.group_lag(r["grp"])
            members = await self._q("members", f"SELECT count(DISTINCT owner) AS n FROM "
                                    f"{self.t('inflight')} WHERE grp = $1", r["grp"])
            n = int(members[0]["n"])
            out.append(GroupInfo(r["grp"], tuple(p.topic for p in lag), n,
                                 "Stable" if n else "Empty", tuple(lag)))
        return out


class _PgSubscription(Subscription):
    safety_poll = 1.0  # seconds between reads when no NOTIFY arrives

    def __init__(self, backend: PostgresBackend, topics: list[str], grp: str, member: str,
                 private: bool, listener: asyncpg.Connection) -> None:
        self.backend = backend
        self.topics = topics
        self.grp = grp
        self.member = member
        self.private = private
        self.listener = listener
        self.wake = asyncio.Event()
        self._closed = False
        self.releases = not private  # a private group has no other member to take them

    def notified(self, conn: Any, pid: int, channel: str, topic: str) -> None:
        if topic in self.topics:
            self.wake.set()

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.wake.clear()
            out = await self._take(max_records)
            remaining = deadline - loop.time()
            if out or remaining <= 0 or self._closed:
                return out
            try:
                # NOTIFY wakes us at once; the cap is a safety net for lost notifications.
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
                async with asyncio.timeout(min(remaining, self.safety_poll)):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def _take(self, n: int) -> list[Delivery]:
        be = self.backend
        t = be.t
        try:
            pool = await be._pool()
            async with pool.acquire() as conn, conn.transaction():
                # A heartbeat: what this member holds stays leased while it keeps
                # fetching, so only a member that stopped (or died) loses its rows.
                await conn.execute(
                    f"UPDATE {t('inflight')} SET lease_until = now() + make_interval(secs => $3) "
                    "WHERE grp = $1 AND owner = $2", self.grp, self.member, be.lease)
                # Expired leases of members that died: take them over, skipping rows
                # another member is taking over right now.
                reclaimed = await conn.fetch(f"""
                    UPDATE {t('inflight')} i SET owner = $2,
                        lease_until = now() + make_interval(secs => $3),
                        deliveries = i.deliveries + 1
                    WHERE (i.grp, i.topic, i.id) IN (
                        SELECT grp, topic, id FROM {t('inflight')}
                        WHERE grp = $1 AND topic = ANY($4) AND lease_until < now()
                        ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)
                    RETURNING i.topic, i.id""", self.grp, self.member, be.lease, self.topics, n)
                ids = [(r["topic"], r["id"]) for r in reclaimed]
                for topic in self.topics:
                    if len(ids) >= n:
                        break
                    pos = await conn.fetchval(
                        f"SELECT position FROM {t('cursors')} WHERE grp = $1 AND topic = $2 "
                        "FOR UPDATE", self.grp, topic)
                    if pos is None:
                        continue
                    new = await conn.fetch(
                        f"SELECT id FROM {t('messages')} WHERE topic = $1 AND id > $2 "
                        "ORDER BY id LIMIT $3", topic, pos, n - len(ids))
                    if not new:
                        continue
                    await conn.executemany(
                        f"INSERT INTO {t('inflight')} (grp, topic, id, owner, lease_until) "
                        "VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) "
                        "ON CONFLICT DO NOTHING",
                        [(self.grp, topic, r["id"], self.member, be.lease) for r in new])
                    await conn.execute(
                        f"UPDATE {t('cursors')} SET position = $3 WHERE grp = $1 AND topic = $2",
                        self.grp, topic, new[-1]["id"])
                    ids += [(topic, r["id"]) for r in new]
                if not ids:
                    return []
                rows = await conn.fetch(
                    f"SELECT id, topic, key, value, headers FROM {t('messages')} "
                    "WHERE id = ANY($1) ORDER BY id", [i for _, i in ids])
        except Exception as exc:
            _raise(exc, "fetch")
        return [
            Delivery(r["topic"], 0, r["id"], r["value"], r["key"],
                     decode_headers(r["headers"]) if r["headers"] else None,
                     (r["topic"], r["id"]))
            for r in rows
        ]

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Expire the leases: the next fetch of any member takes the rows again."""
        if not deliveries:
            return
        be = self.backend
        try:
            pool = await be._pool()
            await pool.executemany(
                # No owner: this member's own lease heartbeat must not renew it.
                f"UPDATE {be.t('inflight')} SET lease_until = now() - interval '1 second', "
                "owner = '' WHERE grp = $1 AND topic = $2 AND id = $3 AND owner = $4",
                [(self.grp, d.topic, d.offset, self.member) for d in deliveries])
        except Exception as exc:
            _raise(exc, "nack")
        self.wake.set()

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Expire the leases and wake the group's members, so an idle one takes them now."""
        await self.nack(deliveries)
        be = self.backend
        try:
            pool = await be._pool()
            for topic in {d.topic for d in deliveries}:
                await pool.execute("SELECT pg_notify($1, $2)", be.channel, topic)
        except Exception as exc:  # released all the same: members find them by safety_poll
            log.debug("notifying released rows: %r", exc)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        be = self.backend
        try:
            pool = await be._pool()
            await pool.executemany(
                f"DELETE FROM {be.t('inflight')} WHERE grp = $1 AND topic = $2 AND id = $3 "
                "AND owner = $4",
                [(self.grp, d.topic, d.offset, self.member) for d in deliveries])
        except Exception as exc:
            _raise(exc, "ack")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wake.set()
        self.backend._subs.discard(self)
        be = self.backend
        try:
            pool = await be._pool()
            if self.private:
                await pool.execute(f"DELETE FROM {be.t('inflight')} WHERE grp = $1", self.grp)
                await pool.execute(f"DELETE FROM {be.t('cursors')} WHERE grp = $1", self.grp)
            else:
                # Hand unfinished rows back now: an expired lease is taken at once.
                await pool.execute(
                    f"UPDATE {be.t('inflight')} SET lease_until = now() - interval '1 second' "
                    "WHERE grp = $1 AND owner = $2", self.grp, self.member)
        except Exception as exc:
            log.debug("releasing leases on close: %r", exc)
        finally:
            try:
                async with asyncio.timeout(5):
                    await self.listener.close()
            except Exception as exc:
                log.debug("closing listener: %r", exc)
