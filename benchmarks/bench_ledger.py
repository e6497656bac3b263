"""The Kafka acknowledgement fold: PartitionLedger.ack against the two code paths it replaced.

Both Kafka subscriptions fold every acknowledgement into the next offsets to
commit, on the consumer's hot path. Before the shared ledger, the aiokafka
subscription did it record by record (``ack`` + ``_advance`` + ``_keep_highest``)
and the confluent one in runs of one fetch's position (``_apply``). Those two
are kept below exactly as they were (commit 2ff59bc), minus the commit I/O, and
fed the same synthetic deliveries as the ledger: ``--n`` deliveries from
``--partitions`` partitions, fetched ``--fetch`` records per partition at a
time (one position tuple per partition and fetch, as the backends build them)
and acknowledged ``--batch`` at a time, in order or shuffled within each call.

Thread CPU time (not wall time: the machine is shared), best of ``--runs``.

usage: python benchmarks/bench_ledger.py [--n 1000000] [--runs 7] [--batch 1000,100,10,1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import groupby, islice, repeat, starmap
from operator import attrgetter
from typing import Any

from mlops_async.backends.base import Delivery
from mlops_async.backends.kafka.ledger import PartitionLedger

from _common import save, table

Key = tuple[str, int]


# -- the replaced code paths, as they were --------------------------------------------

class _OldTracking:
    """What both replaced subscriptions kept alike: the offsets handed out, ownership."""

    def __init__(self) -> None:
        self._revoked_at: dict[Any, int] = {}
        self._outstanding: dict[Any, deque[int]] = {}
        self._done: dict[Any, set[int]] = {}
        self._rewound: dict[Any, tuple[int, int]] = {}

    def handed_out(self, key: Any, offsets: list[int]) -> None:
        q = self._outstanding.get(key)
        if q is None:
            q = self._outstanding[key] = deque()
            self._done[key] = set()
        q.extend(offsets)

    def owns(self, delivery: Delivery) -> bool:
        tp, fetched_in = delivery.position
        if fetched_in < self._revoked_at.get(tp, 0):
            return False
        rewound = self._rewound.get(tp)
        return not (rewound is not None and fetched_in < rewound[0]
                    and int(delivery.offset) >= rewound[1])


class OldAio(_OldTracking):
    """aio.py's _KafkaSubscription bookkeeping: ack() + _advance() + _keep_highest()."""

    def __init__(self) -> None:
        super().__init__()
        self.group = "g"
        self._pending: dict[Any, int] = {}

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self.group is None or not deliveries:
            return
        outstanding, done_sets = self._outstanding, self._done
        heads: dict[Any, int] = {}
        last_pos: object = None
        tp: Any = None
        q: deque[int] | None = None
        done: set[int] = set()
        check = False
        for d in deliveries:
            pos = d.position
            if pos is not last_pos:
                last_pos = pos
                tp, fetched_in = pos
                q = None
                if fetched_in >= self._revoked_at.get(tp, 0):
                    q = outstanding.get(tp)
                    done = done_sets.get(tp, done)
                    rewound = self._rewound.get(tp)
                    check = rewound is not None and fetched_in < rewound[0]
            if q is None or (check and not self.owns(d)):
                continue
            offset = d.offset
            if q and offset == q[0] and not done:
                q.popleft()
                heads[tp] = offset  # type: ignore[assignment]
            else:
                done.add(offset)  # type: ignore[arg-type]
        offsets = self._advance(heads=heads)
        if offsets:
            _keep_highest(self._pending, offsets)  # _commit_soon, without the task

    def _advance(self, only: set[Any] | None = None,
                 heads: dict[Any, int] | None = None) -> dict[Any, int]:
        offsets: dict[Any, int] = {}
        for tp, q in self._outstanding.items():
            if only is not None and tp not in only:
                continue
            done = self._done[tp]
            last = heads.get(tp) if heads else None
            while q and q[0] in done:
                last = q.popleft()
                done.discard(last)
            if last is not None:
                offsets[tp] = last + 1
        return offsets


def _keep_highest(into: dict[Any, int], offsets: dict[Any, int]) -> None:
    for tp, offset in offsets.items():
        if offset > into.get(tp, -1):
            into[tp] = offset


_POSITION = attrgetter("position")
_OFFSET = attrgetter("offset")


class OldConfluent(_OldTracking):
    """confluent/consumer.py's thread-side fold: _apply()."""

    def __init__(self) -> None:
        super().__init__()
        self._to_commit: dict[Key, int] = {}
        self._changed_at = 0

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        outstanding, done_sets, to_commit = self._outstanding, self._done, self._to_commit
        changed = self._changed_at
        touched = set()
        for (key, fetched_in), group in groupby(deliveries, _POSITION):
            q = outstanding.get(key)
            if q is None:
                continue
            if fetched_in < changed:
                group = filter(self.owns, group)
            offsets = list(map(_OFFSET, group))
            n = len(offsets)
            if not n or not q:
                continue
            done = done_sets[key]
            if not done and offsets[0] == q[0] and n <= len(q) and offsets == list(islice(q, n)):
                if n == len(q):
                    q.clear()
                else:
                    deque(starmap(q.popleft, repeat((), n)), maxlen=0)
                to_commit[key] = offsets[-1] + 1
                continue
            for offset in offsets:
                if not q:
                    break
                head = q[0]
                if offset == head and not done:
                    q.popleft()
                    to_commit[key] = head + 1
                elif isinstance(offset, int) and offset >= head:
                    done.add(offset)
                    touched.add(key)
        for key in touched:
            q, done = outstanding[key], done_sets[key]
            last = None
            while q and q[0] in done:
                last = q.popleft()
                done.discard(last)
            if last is not None:
                to_commit[key] = last + 1


class New:
    """The shared ledger, as both subscriptions call it."""

    def __init__(self) -> None:
        self.ledger: PartitionLedger[Key] = PartitionLedger()

    def handed_out(self, key: Key, offsets: list[int]) -> None:
        self.ledger.handed_out(key).extend(offsets)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.ledger.ack(deliveries)
        if self.ledger.to_commit:  # aio.py: start the committer if it is not running
            pass


# -- the workload --------------------------------------------------------------------

def fetches(n: int, partitions: int, fetch: int) -> list[tuple[Key, list[Delivery]]]:
    """``n`` deliveries as fetches of ``fetch`` records, partitions in turn."""
    out: list[tuple[Key, list[Delivery]]] = []
    next_offset = dict.fromkeys(range(partitions), 0)
    total = 0
    while total < n:
        for p in range(partitions):
            key = ("t", p)
            position = (key, 0)
            start = next_offset[p]
            k = min(fetch, n - total)
            out.append((key, [Delivery("t", p, o, b"v", None, None, position)
                              for o in range(start, start + k)]))
            next_offset[p] += k
            total += k
            if total >= n:
                break
    return out


def run_once(make: Callable[[], Any], got: list[tuple[Key, list[Delivery]]],
             calls: list[list[Delivery]]) -> float:
    """Thread CPU seconds to fold every call's acks (offsets handed out beforehand)."""
    sub = make()
    for key, ds in got:
        sub.handed_out(key, [d.offset for d in ds])
    ack = sub.ack
    t0 = time.thread_time()
    for call in calls:
        ack(call)
    return time.thread_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--fetch", type=int, default=500, help="records per partition and fetch")
    ap.add_argument("--batch", default="1000,100,10,1", help="acks per call, comma-separated")
    args = ap.parse_args()
    got = fetches(args.n, args.partitions, args.fetch)
    flat = [d for _, ds in got for d in ds]
    paths: dict[str, Callable[[], Any]] = {
        "old aio.py ack + _advance": OldAio,
        "old confluent _apply": OldConfluent,
        "PartitionLedger.ack": New,
    }
    rows: list[dict[str, Any]] = []
    rng = random.Random(1)
    for order in ("in order", "shuffled per call"):
        for batch in [int(b) for b in args.batch.split(",")]:
            if order != "in order" and batch == 1:
                continue
            calls = [flat[i:i + batch] for i in range(0, len(flat), batch)]
            if order != "in order":
                for call in calls:
                    rng.shuffle(call)
            best: dict[str, float] = dict.fromkeys(paths, float("inf"))
            for _ in range(args.runs):  # paths interleaved within each round
                for name, make in paths.items():
                    best[name] = min(best[name], run_once(make, got, calls))
            for name, seconds in best.items():
                rows.append({"order": order, "acks_per_call": batch, "path": name,
                             "ns_per_ack": round(seconds / len(flat) * 1e9, 1)})
    print(table(rows, ["order", "acks_per_call", "path", "ns_per_ack"]))
    save("ledger", rows, {"n": args.n, "runs": args.runs, "partitions": args.partitions,
                          "fetch": args.fetch, "clock": "thread CPU time, best of runs"})


if __name__ == "__main__":
    main()
