"""How keyless records spread over a topic's partitions: the ``partitioner`` option.

Both Kafka backends take ``partitioner="default"`` or ``"round_robin"``.
Keyed records always go where Kafka's murmur2 hash of the key says (the Java
client's choice), so order per key holds and both backends agree. Keyless
records: ``"default"`` sends each batch the Producer hands over to one
partition, rotating between batches (few, large requests: the fast path);
``"round_robin"`` gives each record the next partition, so a burst of slow
work lands on every partition and every member of the group that reads it
gets its share. Other brokers hand records to a group's members one by one
and take no such option (see :func:`mlops_async.backends.check_options`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from ...errors import ConfigurationError

__all__ = ["PARTITIONERS", "RoundRobin", "round_robin_wanted"]

#: The values ``partitioner=`` takes.
PARTITIONERS = ("default", "round_robin")


def round_robin_wanted(value: object, scheme: str) -> bool:
    """True for ``"round_robin"``, False for ``"default"`` (or None); else ConfigurationError."""
    if value is None or value == "default":
        return False
    if value == "round_robin":
        return True
    raise ConfigurationError(
        f"partitioner={value!r} for {scheme}://: expected 'default' (keyless records: one "
        "partition per batch) or 'round_robin' (keyless records: the next partition for each "
        "record); keyed records always go by Kafka's murmur2 hash of the key"
    )


class RoundRobin:
    """The next partition for each topic's keyless records, one turn per record.

    ``counts`` is the backend's own map of partition counts, read at every turn,
    so a count the backend refreshes takes effect at the next record. Indexing
    (``rr[topic]``) takes one turn and gives the partition, or ``unknown``
    while the topic's count is not known.
    """

    __slots__ = ("_counts", "_next", "_unknown")

    def __init__(self, counts: Mapping[str, int] | None = None, unknown: int = -1) -> None:
        self._counts: Mapping[str, int] = counts if counts is not None else {}
        self._next: dict[str, int] = {}
        self._unknown = unknown

    def take(self, topic: str, n: int = 1) -> int:
        """Take ``n`` turns of ``topic``; the first one (partition index = turn % count)."""
        start = self._next.get(topic)
        if start is None:
            # A random first turn, so that short-lived producers do not all start on 0.
            start = random.randrange(1 << 16)
        self._next[topic] = start + n
        return start

    def __getitem__(self, topic: str) -> int:
        count = self._counts.get(topic)
        if not count:
            return self._unknown
        return self.take(topic) % count
