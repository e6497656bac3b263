"""Batch inference: a source of transactions, a scoring stage with replicas and a batch handler.

    mlops-async run examples.batch_inference.scoring:pipeline          # in-memory, to the end
    SCORING_URL=redis://localhost:6379/0 mlops-async run examples.batch_inference.scoring:pipeline
    SCORING_URL=redis://... mlops-async run examples.batch_inference.scoring:pipeline \
        --stage score --replicas 4                                      # only the scorers

The ``score`` stage gets up to 256 transactions at a time and scores them with one
``predict_proba`` call: per-call overhead (input checks, a Python round trip into
NumPy) is paid once per batch instead of once per message. It is a plain function,
so the engine runs it in its thread pool and the event loop stays free. A
transaction the model cannot take (wrong number of features) makes the batch fail;
the engine splits the batch until that one transaction fails alone and
dead-letters it, while its neighbours are scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec
import numpy as np

from mlops_async import Pipeline

from .model import N_FEATURES, make_data, model


class Transaction(msgspec.Struct, frozen=True):
    id: int
    features: list[float]


class Score(msgspec.Struct, frozen=True):
    id: int
    fraud: bool
    probability: float


class RequestParams(msgspec.Struct):
    count: int = 2000
    seed: int = 1


pipeline = Pipeline("scoring", url=os.environ.get("SCORING_URL", "memory://scoring"))


@pipeline.on_startup
def load_model() -> None:
    model()  # trained before the first batch arrives, not inside it


@pipeline.stage(outputs=["transactions"], params=RequestParams)
def requests(params: RequestParams) -> Iterator[tuple[str, Transaction]]:
    """``count`` transactions to score (made up with ``seed``)."""
    x, _ = make_data(params.count, params.seed)
    for i, row in enumerate(x):
        yield "transactions", Transaction(i, row.tolist())


def check(batch: list[Transaction]) -> np.ndarray[tuple[int, int], np.dtype[np.float64]]:
    bad = [t.id for t in batch if len(t.features) != N_FEATURES]
    if bad:
        raise ValueError(f"transactions {bad} do not have {N_FEATURES} features")
    return np.array([t.features for t in batch], dtype=np.float64)


@pipeline.stage(input="transactions", outputs=["scores"], replicas=2, batch_size=256,
                batch_wait=0.01, retries=1, backoff=0.01)
def score(batch: list[Transaction]) -> list[tuple[str, Score]]:
    """Score a batch with one model call."""
    probabilities = model().predict_proba(check(batch))[:, 1]
    return [("scores", Score(t.id, bool(p >= 0.5), round(float(p), 6)))
            for t, p in zip(batch, probabilities, strict=True)]


def score_one(t: Transaction) -> list[tuple[str, Score]]:
    """The per-message handler the batch handler replaces (benchmarks/bench_batch_inference)."""
    return score([t])
