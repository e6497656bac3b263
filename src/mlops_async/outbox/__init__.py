"""The parts of a :class:`~mlops_async.Producer`, one job each.

- :class:`RecordBuffer`: the bounded memory and its one capacity rule;
- :class:`SequenceLedger`: every accepted record's number, settled in order;
- :class:`Sender`: the task that cuts batches and delivers them;
- :class:`SpoolPath`: the way through local disk while the broker is away.
"""

from .buffer import RecordBuffer
from .ledger import SequenceLedger
from .sender import Batching, Sender
from .spooling import SpoolPath

__all__ = ["Batching", "RecordBuffer", "Sender", "SequenceLedger", "SpoolPath"]
