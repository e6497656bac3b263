"""The batch-inference pipeline under the testing kit (run by the suite: tests/examples)."""

from __future__ import annotations

import msgspec

from mlops_async import App
from mlops_async.codec import Codec
from mlops_async.testing import TestApp

from .model import make_data, model
from .scoring import Score, Transaction, pipeline, score


async def test_every_transaction_is_scored_as_the_model_scores_it(url: str | None = None) -> None:
    async with TestApp(pipeline, url=url, timeout=60) as t:
        await t.finished()
        scores = sorted((msgspec.convert(s, Score) for s in t.messages("scores")),
                        key=lambda s: s.id)
        batches = [len(c.input) for c in t.calls("score")]
    x, _ = make_data(2000, seed=1)
    assert [s.id for s in scores] == list(range(2000)), "each one once"
    expected = model().predict_proba(x)[:, 1]
    assert all(abs(s.probability - round(float(p), 6)) < 1e-9
               for s, p in zip(scores, expected, strict=True))
    assert max(batches) > 1 and sum(batches) == 2000, "scored in batches"
    assert {a.name for a in t.apps} == {"scoring.requests", "scoring.score"}
    assert len([a for a in t.apps if a.name == "scoring.score"]) == 2, "two replicas"


async def test_a_malformed_transaction_is_dead_lettered_alone(url: str | None = None) -> None:
    app = App("scorer")
    app.handler(input="transactions", outputs=["scores"], batch_size=64, batch_wait=0.05,
                retries=0)(score)
    x, _ = make_data(20, seed=2)
    async with TestApp(app, url=url) as t:
        for i, row in enumerate(x):
            features = row.tolist()[:5] if i == 7 else row.tolist()
            await t.publish("transactions", Transaction(i, features))
        await t.drain()
        scored = sorted(s["id"] for s in t.messages("scores"))
        [letter] = t.dead_letters("transactions")
    assert scored == [i for i in range(20) if i != 7]
    assert letter.error == "transactions [7] do not have 12 features"
    assert Codec(Transaction).decode(letter.original).id == 7, "the original, verbatim"
