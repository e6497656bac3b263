"""kafka:// publishing fills aiokafka record batches through their builder directly.

No broker: the batches are built with aiokafka's own BatchBuilder and read back
with its record reader, so what goes on the wire is checked record by record.
"""

from __future__ import annotations

from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from mlops_async.backends import Record
from mlops_async.backends.kafka.aio import _fill


def _records_of(batch: BatchBuilder) -> list[tuple[int, bytes | None, bytes, list[Any]]]:
    data = batch._build()
    return [(r.offset, r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(data)]


class PublicOnly:
    """A batch with only the public API (another aiokafka): the fallback path."""

    def __init__(self, size: int) -> None:
        self.inner = BatchBuilder(size, 0)

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> Any:
        return self.inner.append(key=key, value=value, timestamp=timestamp, headers=headers)


RECORDS = [
    Record("t", b"v0"),
    Record("t", b"v1", b"k1"),
    Record("t", b"v2", None, (("trace", b"abc"), ("n", b"2"))),
    Record("t", b"v3"),
]


def test_fill_writes_every_record_with_offsets_keys_and_headers() -> None:
    batch = BatchBuilder(1024 * 1024, 0)
    assert _fill(batch, RECORDS, 0) == 4
    assert batch.record_count() == 4
    assert _records_of(batch) == [
        (0, None, b"v0", []),
        (1, b"k1", b"v1", []),
        (2, None, b"v2", [("trace", b"abc"), ("n", b"2")]),
        (3, None, b"v3", []),
    ]


def test_fill_from_an_index_and_stops_at_a_full_batch() -> None:
    big = [Record("t", bytes([i]) * 300) for i in range(10)]
    first = BatchBuilder(1024, 0)
    n = _fill(first, big, 0)
    assert 0 < n < 10
    assert [v[0] for _, _, v, _ in _records_of(first)] == list(range(n))
    # The rest goes into the next batch, starting where the first stopped.
    second = BatchBuilder(1024 * 1024, 0)
    assert _fill(second, big, n) == 10 - n
    assert [v[0] for _, _, v, _ in _records_of(second)] == list(range(n, 10))


def test_a_full_batch_takes_nothing_more() -> None:
    batch = BatchBuilder(100, 0)
    assert _fill(batch, [Record("t", b"x" * 10), Record("t", b"y" * 500)], 0) == 1
    assert _fill(batch, [Record("t", b"z" * 10)], 0) == 0  # closed once full, as append()
    assert batch.append(key=None, value=b"z", timestamp=None) is None


def test_fallback_through_the_public_append() -> None:
    batch = PublicOnly(1024 * 1024)
    assert _fill(batch, RECORDS, 1) == 3
    assert [(k, v, h) for _, k, v, h in _records_of(batch.inner)] == [
        (b"k1", b"v1", []),
        (None, b"v2", [("trace", b"abc"), ("n", b"2")]),
        (None, b"v3", []),
    ]
