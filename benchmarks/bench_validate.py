"""What validating on send costs: ``Producer(schema=..., validate=...)`` over a zero-cost backend.

``validate=None`` (the default) checks the dtype of array fields that declare one
(a schema without such fields pays nothing: the check is not there);
``validate=True`` also decodes every encoded message as a consumer will. Each
row is ``await send()`` of the same messages over bench_layer's ZeroBackend,
per message, thread CPU time, best of --runs (rounds interleave the rows).

usage: python benchmarks/bench_validate.py [--n 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from bench_layer import ZeroBackend

from mlops_async import Producer

from _common import typical_message


class Emb(msgspec.Struct):
    id: str
    vec: npt.NDArray[np.float32]


class Row(msgspec.Struct):
    user: str
    value: float
    seq: int


async def _send(msgs: list[Any], schema: Any, validate: bool | None) -> None:
    async with Producer(backend=ZeroBackend(), topic="t", schema=schema,
                        validate=validate) as p:
        for m in msgs:
            await p.send(m)
        await p.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    vec = np.arange(768, dtype=np.float32)
    cases: dict[str, tuple[list[Any], Any]] = {
        "MLOpsMessage (no array field)": ([typical_message(i) for i in range(1000)], None),
        "Row(user, value, seq)": ([Row(f"u{i}", i / 3, i) for i in range(1000)], Row),
        "Emb(id, 768 x float32)": ([Emb(f"e{i}", vec) for i in range(1000)], Emb),
    }
    gc.freeze()
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.runs):
        for name, (sample, schema) in cases.items():
            msgs = sample * (args.n // len(sample))
            for mode, validate in (("off", False), ("default", None), ("full", True)):
                kw = {} if schema is None else {"schema": schema}
                t0 = time.thread_time()
                asyncio.run(_send(msgs, kw.get("schema", Producer.__init__.__kwdefaults__
                                                ["schema"]), validate))
                us = (time.thread_time() - t0) / len(msgs) * 1e6
                best[name, mode] = min(best.get((name, mode), us), us)
    print(f"{'schema':<32}{'off':>10}{'default':>10}{'full':>10}   us per await send()")
    for name in cases:
        print(f"{name:<32}" + "".join(f"{best[name, m]:>10.3f}"
                                      for m in ("off", "default", "full")))


if __name__ == "__main__":
    main()
