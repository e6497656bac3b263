"""numpy arrays as payloads (the numpy extra)."""

from __future__ import annotations

import asyncio

# --8<-- [start:embeddings]
import msgspec
import numpy as np
import numpy.typing as npt

from mlops_async import Consumer, Producer


class Embedding(msgspec.Struct):
    doc_id: str
    vector: npt.NDArray[np.float32]      # checked on decode


async def embeddings(url: str = "memory://embeddings") -> Embedding:
    vec = np.random.default_rng(0).random(768, dtype=np.float32)
    async with Consumer(url, topic="embeddings", group="index", schema=Embedding,
                        auto_offset_reset="earliest") as consumer, \
            Producer(url, topic="embeddings", schema=Embedding) as producer:
        await producer.send(Embedding("doc-1", vec), flush=True)   # 3,091 bytes for 3,072
        async for received in consumer:
            assert received.vector.dtype == np.float32
            assert np.array_equal(received.vector, vec)
            return received
    raise AssertionError("unreachable")
# --8<-- [end:embeddings]


if __name__ == "__main__":
    print(asyncio.run(embeddings()).vector[:4])
