"""``mlops-async top``: a live terminal view of every queue on a bus.

For each topic: messages in per second (growth of the log), out per second
(growth of the consumer groups' committed positions), group lag, dead letters
(records in ``<topic>.dlq``) and the last error a dead letter carried. Works
on any backend with an Admin (memory in the same process, Kafka, Redis,
PostgreSQL); refreshed in place with rich.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .admin import Admin
from .app.heartbeat import LIVE_STATES, STATS_TOPIC, ReplicaStats
from .backends import PartitionLag
from .consumer import Consumer
from .deadletter import DeadLetter
from .endpoint import redact
from .errors import BusError, MissingDependency, NotSupported

__all__ = ["QueueRow", "TopView", "render", "render_replicas", "run_top"]


@dataclass
class QueueRow:
    topic: str
    written: int | None = None
    consumed: int | None = None
    lag: int | None = None
    groups: list[str] = field(default_factory=list)
    in_rate: float | None = None
    out_rate: float | None = None
    dead_letters: int = 0
    last_error: str = ""


class TopView:
    """Takes snapshots of a bus and turns successive ones into rates.

    It also follows the replicas' heartbeats and the dead-letter topics (no
    consumer group: nobody's position moves), keeping the latest beat of each
    replica and the newest ``keep_letters`` dead letters of each dead-letter topic.
    """

    def __init__(self, url: str | None, group: str | None = None,
                 client_options: dict[str, Any] | None = None, *,
                 keep_letters: int = 50, forget: float = 600.0) -> None:
        self.url = url
        self.group = group
        self.client_options = dict(client_options or {})
        self.admin = Admin(url, **self.client_options)
        self._dlq: Consumer[DeadLetter] | None = None
        self._dlq_topics: list[str] = []
        self._last_errors: dict[str, str] = {}
        self._prev: dict[str, QueueRow] = {}
        self._prev_t = 0.0
        self._stats: Consumer[ReplicaStats] | None = None
        #: The latest beat of every replica heard from in the last ``forget`` seconds.
        self.replicas: dict[str, ReplicaStats] = {}
        #: Dead-letter topic -> its newest letters, oldest first.
        self.letters: dict[str, deque[DeadLetter]] = {}
        self.keep_letters = keep_letters
        self.forget = forget

    async def close(self) -> None:
        if self._dlq is not None:
            await self._dlq.close()
        if self._stats is not None:
            await self._stats.close()
        await self.admin.close()

    async def replica_rows(self) -> list[ReplicaStats]:
        """The latest heartbeat of every app replica still running, by stage."""
        await self.read_heartbeats()
        now = time.time()
        alive = [b for b in self.replicas.values()
                 if b.state in LIVE_STATES and now - b.at < 3 * b.every]
        return sorted(alive, key=lambda b: (b.stage, b.host, b.pid, b.replica))

    async def read_heartbeats(self) -> dict[str, ReplicaStats]:
        """Read the heartbeats that arrived; the latest beat of each recent replica."""
        if self._stats is None:
            # No group: every heartbeat, without disturbing anyone.
            self._stats = Consumer(self.url, topic=STATS_TOPIC, schema=ReplicaStats,
                                   auto_offset_reset="earliest", on_invalid="raise",
                                   **self.client_options)
            await self._stats.start()
        while True:
            try:
                beats = await self._stats.get_messages(timeout=0.05)
            except BusError:
                break
            if not beats:
                break
            for b in beats:
                self.replicas[b.replica] = b
        now = time.time()
        self.replicas = {k: b for k, b in self.replicas.items() if now - b.at < self.forget}
        return self.replicas

    async def _follow_dead_letters(self, dlq_topics: list[str]) -> None:
        if sorted(dlq_topics) != sorted(self._dlq_topics):
            if self._dlq is None:
                # No group: reads every dead letter without disturbing anyone's position.
                self._dlq = Consumer(self.url, schema=DeadLetter, auto_offset_reset="earliest",
                                     on_invalid="raise", **self.client_options)
                await self._dlq.start()
            new = [t for t in dlq_topics if t not in self._dlq_topics]
            if new:
                await self._dlq.subscribe(new)
            self._dlq_topics = list(dlq_topics)
        if self._dlq is None:
            return
        while True:
            try:
                letters = await self._dlq.get_messages(timeout=0.05)
            except BusError:
                return
            if not letters:
                return
            for x in letters:
                self._last_errors[x.source_topic] = f"{x.error_type}: {x.error}"
                kept = self.letters.get(x.topic or f"{x.source_topic}.dlq")
                if kept is None:
                    kept = self.letters[x.topic or f"{x.source_topic}.dlq"] = deque(
                        maxlen=self.keep_letters)
                kept.append(x)

    async def _lags(self, only: Sequence[str] | None) -> list[tuple[str, list[PartitionLag]]]:
        """Each group's lag: of ``only`` (one query per group), else of every group."""
        try:
            if only is None:
                return [(g.group, list(g.lag)) for g in await self.admin.describe_groups()]
            return [(g, await self.admin.group_lag(g)) for g in only]
        except NotSupported:
            return []

    async def snapshot(self, groups: Sequence[str] | None = None) -> list[QueueRow]:
        """One row per topic; lag from ``groups`` (default: the view's group, else every
        group on the bus: naming them saves querying groups nobody watches)."""
        now = time.monotonic()
        topics = {t.name: t for t in await self.admin.list_topics()}
        if groups is None and self.group:
            groups = [self.group]
        lags = await self._lags(groups)
        rows: dict[str, QueueRow] = {}
        for name, info in topics.items():
            if name.endswith((".dlq", ".control")) or name == STATS_TOPIC:
                continue  # dead letters are a column; control and stats are ours
            rows[name] = QueueRow(name, written=info.messages)
        for group, lag in lags:
            for p in lag:
                row = rows.get(p.topic)
                if row is None:
                    continue
                if group not in row.groups:
                    row.groups.append(group)
                row.lag = (row.lag or 0) + p.lag
                row.consumed = (row.consumed or 0) + (p.committed or 0)
                # The log's end as seen by the group is at least what was written.
                row.written = max(row.written or 0, p.end_offset)
        dlq_topics = [n for n in topics if n.endswith(".dlq")]
        for n in dlq_topics:
            src = n[: -len(".dlq")]
            if src in rows:
                rows[src].dead_letters = topics[n].messages or 0
        await self._follow_dead_letters(dlq_topics)
        for name, row in rows.items():
            row.last_error = self._last_errors.get(name, "")
            prev = self._prev.get(name)
            dt = now - self._prev_t
            if prev is not None and dt > 0:
                if row.written is not None and prev.written is not None:
                    row.in_rate = max(0.0, (row.written - prev.written) / dt)
                if row.consumed is not None and prev.consumed is not None:
                    row.out_rate = max(0.0, (row.consumed - prev.consumed) / dt)
        self._prev, self._prev_t = rows, now
        return sorted(rows.values(), key=lambda r: r.topic)


def render_replicas(replicas: list[ReplicaStats]) -> Any:
    """One row per running app replica: where it runs, what it did, its last error."""
    from rich.table import Table

    table = Table(title="stage replicas", expand=True)
    for col in ("stage", "replica", "in/s", "out/s", "processed", "failed", "last error"):
        table.add_column(col, justify="right" if col.endswith(("/s", "ed")) else "left",
                         overflow="fold" if col == "last error" else "ellipsis")
    for b in replicas:
        table.add_row(b.stage, f"{b.host}:{b.pid}", f"{b.in_rate:,.1f}", f"{b.out_rate:,.1f}",
                      f"{b.processed:,}", f"[red]{b.failed}[/]" if b.failed else "0",
                      b.last_error[:120])
    return table


def render(rows: list[QueueRow], url: str | None,
           replicas: list[ReplicaStats] | None = None) -> Any:
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"mlops-async top  {redact(url or '')}", expand=True)
    for col, justify in (("queue", "left"), ("in/s", "right"), ("out/s", "right"),
                         ("written", "right"), ("lag", "right"), ("groups", "left"),
                         ("dead letters", "right"), ("last error", "left")):
        table.add_column(col, justify=justify,  # type: ignore[arg-type]
                         overflow="fold" if col == "last error" else "ellipsis")

    def num(v: float | int | None, fmt: str = ",.0f") -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        table.add_row(r.topic, num(r.in_rate, ",.1f"), num(r.out_rate, ",.1f"), num(r.written),
                      num(r.lag), ", ".join(r.groups) or "-",
                      f"[red]{r.dead_letters}[/]" if r.dead_letters else "0",
                      r.last_error[:120])
    return Group(table, render_replicas(replicas)) if replicas else table


async def run_top(url: str | None, *, group: str | None = None, interval: float = 1.0,
                  console: Any = None, iterations: int | None = None,
                  client_options: dict[str, Any] | None = None) -> None:
    """Show the live view until cancelled (or for ``iterations`` refreshes).

    Raises :class:`MissingDependency` without the ``cli`` extra (rich).
    """
    try:
        from rich.live import Live
    except ImportError as exc:
        raise MissingDependency(
            "mlops-async top draws with rich: pip install 'mlops-async[cli]'") from exc

    view = TopView(url, group, client_options)
    try:
        rows = await view.snapshot()
        with Live(render(rows, url, await view.replica_rows()), console=console,
                  refresh_per_second=4, auto_refresh=False) as live:
            done = 1
            while iterations is None or done < iterations:
                await asyncio.sleep(interval)
                rows = await view.snapshot()
                live.update(render(rows, url, await view.replica_rows()), refresh=True)
                done += 1
    finally:
        await view.close()
