"""The partition offset ledger both Kafka subscriptions keep, through its public interface.

A fetch is simulated as the backends do it: the offsets handed out are noted
with ``handed_out`` and every delivery of one partition's fetch shares one
``position`` tuple ``(key, epoch)``.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_async.backends.base import Delivery
from mlops_async.backends.kafka.ledger import PartitionLedger, keep_highest

Key = tuple[str, int]
A: Key = ("t", 0)
B: Key = ("t", 1)


def fetch(ledger: PartitionLedger[Key], key: Key, *offsets: int) -> list[Delivery]:
    ledger.handed_out(key).extend(offsets)
    position = (key, ledger.epoch)
    return [Delivery(key[0], key[1], o, b"v", position=position) for o in offsets]


def acked(ledger: PartitionLedger[Key], deliveries: list[Delivery]) -> dict[Key, int]:
    """Acknowledge, and take what became due for commit."""
    ledger.ack(deliveries)
    return ledger.take()


def test_in_order_acks_commit_one_past_the_last() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    d = fetch(ledger, A, 0, 1, 2, 3)
    assert acked(ledger, d[:2]) == {A: 2}
    assert acked(ledger, d[2:]) == {A: 4}
    assert acked(ledger, d[2:]) == {}, "an ack sent again changes nothing"


def test_out_of_order_acks_commit_only_the_acknowledged_prefix() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    d = fetch(ledger, A, 0, 1, 2, 3, 4)
    assert acked(ledger, [d[1], d[3]]) == {}, "0 is still in progress: nothing is safe yet"
    assert acked(ledger, [d[2], d[0]]) == {A: 4}
    assert acked(ledger, [d[4]]) == {A: 5}
    assert acked(ledger, [d[2]]) == {}


def test_runs_of_several_partitions_gaps_and_repeats_in_one_call() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    a = fetch(ledger, A, 0, 1, 2, 3)
    b = fetch(ledger, B, 10, 12, 13)  # a gap in the offsets (compaction, transactions)
    assert acked(ledger, a[:2] + b) == {A: 2, B: 14}
    assert acked(ledger, [a[2], a[2]]) == {A: 3}, "the same one twice: 3 is still outstanding"
    assert acked(ledger, [a[3]]) == {A: 4}
    c = fetch(ledger, A, 4, 5, 6)
    assert acked(ledger, [c[0], c[2]]) == {A: 5}, "a run with a hole: only its prefix counts"
    assert acked(ledger, [c[1]]) == {A: 7}


def test_acks_interleaving_two_fetches_of_one_partition() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    first = fetch(ledger, A, 0, 1)
    second = fetch(ledger, A, 2, 3)
    assert acked(ledger, [second[0], first[0], second[1]]) == {A: 1}
    assert acked(ledger, [first[1]]) == {A: 4}


def test_acks_of_a_revoked_partition_are_stale_and_its_commit_is_dropped() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    before = fetch(ledger, A, 0, 1, 2)
    other = fetch(ledger, B, 0)
    ledger.ack([before[0], other[0]])  # due, not yet taken by a commit
    assert ledger.forget({A}) == 1 == ledger.epoch == ledger.changed_at
    assert ledger.take() == {B: 1}, "the revoked partition's commit is its new owner's"
    assert not ledger.owns(before[1]), "fetched before the revocation: the new owner reads it"
    assert ledger.owns(other[0])
    after = fetch(ledger, A, 1, 2)  # it came back; reading resumes at the last commit
    assert all(ledger.owns(d) for d in after)
    assert acked(ledger, [before[1], before[2]]) == {}, "a stale ack is never committed"
    assert acked(ledger, after) == {A: 3}


def test_forgetting_nothing_keeps_the_epoch() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    assert ledger.forget(set()) == 0 and ledger.rewound({}) == 0


def test_a_rewind_makes_copies_at_or_past_it_stale() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    d = fetch(ledger, A, 0, 1, 2, 3)
    b = fetch(ledger, B, 7)
    assert acked(ledger, [d[0]]) == {A: 1}
    assert ledger.rewound({A: 1}) == 1 == ledger.changed_at  # nack(d[1]) sought back to 1
    assert ledger.owns(d[0]) and not any(ledger.owns(x) for x in d[1:])
    assert ledger.owns(b[0]), "another partition's copies are untouched"
    assert acked(ledger, [d[2], d[3]]) == {}, "copies from before the rewind are ignored"
    again = fetch(ledger, A, 1, 2, 3)
    assert acked(ledger, again + b) == {A: 4, B: 8}


def test_nack_folds_to_the_lowest_owned_offset_per_partition() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    a = fetch(ledger, A, 0, 1, 2, 3)
    b = fetch(ledger, B, 5, 6)
    assert ledger.lowest([a[3], b[1], a[1], a[2], b[0]]) == {A: 1, B: 5}
    ledger.forget({B})
    assert ledger.lowest([a[3], b[0]]) == {A: 3}, "a stale copy is not rewound"
    assert ledger.lowest([]) == {}


def test_take_restore_and_confirm_keep_the_highest_offset() -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    a = fetch(ledger, A, 0, 1, 2)
    b = fetch(ledger, B, 0, 1)
    ledger.ack(a[:1] + b[:1])
    assert ledger.take({A}) == {A: 1} and ledger.to_commit == {B: 1}
    ledger.ack(a[1:2])
    ledger.restore({A: 1, B: 0})  # a commit that failed goes back, never lowering a partition
    assert ledger.to_commit == {A: 2, B: 1}
    ledger.confirm({A: 2, B: 0})  # the broker holds A at 2: not due again; B's 1 still is
    assert ledger.to_commit == {B: 1}
    ledger.forget({B})
    ledger.restore({B: 1})
    assert ledger.to_commit == {}, "a revoked partition's failed commit is not put back"


def test_keep_highest_merges_pending_commits() -> None:
    into = {A: 5, B: 2}
    keep_highest(into, {A: 3, B: 4, ("u", 0): 0})
    assert into == {A: 5, B: 4, ("u", 0): 0}


# -- the rule, against a model --------------------------------------------------------

class Model:
    """The acknowledged-prefix rule, spelled out: per partition, the committed offset is
    1 + the highest offset such that every offset handed out up to it is acknowledged."""

    def __init__(self) -> None:
        self.handed: dict[Key, set[int]] = {A: set(), B: set()}
        self.acked: dict[Key, set[int]] = {A: set(), B: set()}
        self.committed: dict[Key, int] = {}

    def settle(self) -> None:
        for key, handed in self.handed.items():
            last = None
            for offset in sorted(handed):
                if offset not in self.acked[key]:
                    break
                last = offset
            if last is not None and last + 1 > self.committed.get(key, -1):
                self.committed[key] = last + 1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_ledger_commits_what_the_model_says(data: st.DataObject) -> None:
    ledger: PartitionLedger[Key] = PartitionLedger()
    model = Model()
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    next_offset = {A: 0, B: 0}
    held: list[tuple[Delivery, bool]] = []  # every copy handed out, and whether it is current
    committed: dict[Key, int] = {}
    for _ in range(data.draw(st.integers(1, 40))):
        op = data.draw(st.sampled_from(["fetch", "fetch", "ack", "ack_in_order", "nack",
                                        "revoke"]))
        current = [d for d, ok in held if ok and int(d.offset) not in model.acked[d.position[0]]]
        if op == "fetch":
            key = data.draw(st.sampled_from([A, B]))
            offsets = []
            for _ in range(data.draw(st.integers(1, 20))):
                offsets.append(next_offset[key])
                next_offset[key] += data.draw(st.sampled_from([1, 1, 1, 2]))  # gaps too
            held += [(d, True) for d in fetch(ledger, key, *offsets)]
            model.handed[key].update(offsets)
        elif op in ("ack", "ack_in_order") and held:
            if op == "ack_in_order":  # the usual case: what was fetched, in fetch order
                batch = current[:data.draw(st.integers(1, 40))]
            else:  # any copies, stale ones too, in any order, some twice
                batch = [rng.choice(held)[0] for _ in range(data.draw(st.integers(1, 40)))]
            valid = {id(d) for d, ok in held if ok}
            ledger.ack(batch)
            for d in batch:
                if id(d) in valid:
                    model.acked[d.position[0]].add(int(d.offset))
        elif op == "nack" and current:  # seek back to an unacknowledged copy
            d = rng.choice(current)
            key, offset = d.position[0], int(d.offset)
            assert ledger.lowest([d]) == {key: offset}
            ledger.rewound({key: offset})
            # The ledger keeps one rewind per partition: copies an earlier rewind made
            # stale leave the model's hands first (a Consumer drops them at that epoch).
            held = [(x, ok and not (x.position[0] == key and int(x.offset) >= offset))
                    for x, ok in held if ok or x.position[0] != key]
            model.handed[key] = {o for o in model.handed[key] if o < offset}
            model.acked[key] = {o for o in model.acked[key] if o < offset}
            next_offset[key] = offset
        elif op == "revoke":  # commit what is due, forget, read again from the commit
            key = data.draw(st.sampled_from([A, B]))
            keep_highest(committed, ledger.take({key}))
            ledger.forget({key})
            held = [(x, ok and x.position[0] != key) for x, ok in held]
            model.handed[key], model.acked[key] = set(), set()
            next_offset[key] = committed.get(key, 0)
        keep_highest(committed, ledger.take())
        model.settle()
        assert committed == model.committed
        assert all(ledger.owns(d) == ok for d, ok in held)
