"""A batch handler: one model call for up to 256 inputs."""

from __future__ import annotations

import asyncio

import msgspec

from mlops_async import App, Consumer, Producer


class FeatureRow(msgspec.Struct):
    id: str
    vector: list[float]


class Score(msgspec.Struct):
    id: str
    score: float


class Model:
    """Stands in for a real model: one call scores a whole batch."""

    def predict(self, vectors: list[list[float]]) -> list[float]:
        return [sum(v) / len(v) for v in vectors]


model = Model()
app = App("scorer", url="memory://scores")


# --8<-- [start:handler]
@app.handler(input="features", outputs=["scores"], batch_size=256, batch_wait=0.02)
async def score(rows: list[FeatureRow]) -> list[tuple[str, Score]]:
    preds = model.predict([r.vector for r in rows])          # one call for the batch
    return [("scores", Score(r.id, float(p))) for r, p in zip(rows, preds, strict=True)]
# --8<-- [end:handler]


async def run_once(url: str = "memory://scores", n: int = 300) -> list[Score]:
    async with app:
        async with Producer(url, topic="features", schema=FeatureRow) as producer:
            await producer.send_many([FeatureRow(str(i), [float(i), 1.0]) for i in range(n)])
        out: list[Score] = []
        async with Consumer(url, topic="scores", group="check", schema=Score,
                            auto_offset_reset="earliest") as scores:
            while len(out) < n:
                out += await scores.get_messages(timeout=10)
    return out


if __name__ == "__main__":
    print(len(asyncio.run(run_once())))
