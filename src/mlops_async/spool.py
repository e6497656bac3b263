"""A durable outbox for a Producer: records the broker could not take yet, on local disk.

``Producer(..., spool="dir")`` keeps ``dir/outbox.sqlite3`` (sqlite3 from the
standard library, WAL journal, ``synchronous=FULL``: a record is on disk
before :meth:`Spool.append` returns, so a SIGKILL or a power cut right after
``send`` returned loses nothing). Records come back out in the order they
went in. A lock file makes sure only one producer uses a spool at a time.

sqlite calls block, so they run on one thread owned by the spool (which also
keeps them in order); appends made while a write is in progress are committed
together in the next transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .backends import Record
from .backends.base import decode_headers, encode_headers
from .errors import ConfigurationError

__all__ = ["Spool"]


class Spool:
    """The outbox of one producer; see the module docstring.

    The spool does not check ``max_bytes`` itself: the Producer asks :meth:`room`
    before it appends, and waits or times out when there is none.
    """

    def __init__(self, directory: str | Path, *, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.rows = 0  # records in the spool, including appends not yet committed
        self.bytes = 0
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Record] = []
        self._pending_done: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, rows={self.rows})"

    # -- life cycle -------------------------------------------------------------

    async def open(self) -> None:
        """Take the spool's lock and open it.

        Raises :class:`ConfigurationError` if another producer uses it.
        """
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlops_async.spool")
        try:
            self.rows, self.bytes = await self._call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open(self) -> tuple[int, int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "spool.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigurationError(
                f"spool {str(self.directory)!r} is in use by another producer "
                "(one spool directory per producer)"
            ) from None
        try:
            db = self._connect()
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)  # a later open() in this process must not find it "in use"
            raise
        self._lock_fd = fd
        self._db = db
        rows, size = db.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM outbox"
                                ).fetchone()
        return int(rows), int(size)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.directory / "outbox.sqlite3", check_same_thread=False,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # on disk before append() returns
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "seq INTEGER NOT NULL DEFAULT 0, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, "
            "headers BLOB)"
        )
        return db

    async def close(self) -> None:
        """Commit pending appends and release the spool; safe to call twice."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._executor is not None:
            if self._db is not None:
                await self._call(self._db.close)
                self._db = None
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None, "spool is not open"
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled caller must not leave sqlite's thread mid-transaction
        # unobserved; the work finishes, the caller's cancellation still propagates.
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    # -- records ----------------------------------------------------------------

    def room(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes or self.rows == 0

    async def append(self, records: list[Record]) -> None:
        """Write ``records``; returns once they are on disk."""
        size = sum(len(r.value) for r in records)
        self.rows += len(records)
        self.bytes += size
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.extend(records)
        self._pending_done.append(done)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="mlops_async.spool.writer")
        await asyncio.shield(done)

    async def flushed(self) -> None:
        """Return once every append made so far is committed (or failed)."""
        if self._writer is not None:
            await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            waiters, self._pending_done = self._pending_done, []
            try:
                await self._call(self._insert, batch)
            except BaseException as exc:
                self.rows -= len(batch)
                self.bytes -= sum(len(r.value) for r in batch)
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc if isinstance(exc, Exception) else
                                        RuntimeError("spool write interrupted"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def _insert(self, batch: list[Record]) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                # seq is unused; written so that spools open in every version, both ways.
                "INSERT INTO outbox (seq, topic, key, value, headers) VALUES (0, ?, ?, ?, ?)",
                [(r.topic, r.key, r.value, encode_headers(r.headers) if r.headers else None)
                 for r in batch],
            )

    async def head(self, n: int) -> list[tuple[int, Record]]:
        """The oldest ``n`` records as ``(id, record)``, committed appends only."""
        rows: list[tuple[int, str, bytes | None, bytes, bytes | None]] = await self._call(
            self._head, n)
        return [(i, Record(topic, value, key, decode_headers(h) if h else None))
                for i, topic, key, value, h in rows]

    def _head(self, n: int) -> list[Any]:
        assert self._db is not None
        return self._db.execute(
            "SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT ?", (n,)
        ).fetchall()

    async def remove(self, upto: int, count: int, size: int) -> None:
        """Delete every record with id <= ``upto`` (``count`` records, ``size`` bytes)."""
        await self._call(self._remove, upto)
        self.rows -= count
        self.bytes -= size

    def _remove(self, upto: int) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (upto,))
