"""A 768-float32 embedding per message: numpy arrays on the wire vs list[float] vs pickle.

Codec rows (per message, encode and decode; the message is an MLOpsMessage
whose only argument is the embedding):

- ``ndarray (msgpack ext)``: the array itself; decodes into a read-only view.
- ``list[float] (msgpack)``: the embedding as the list of Python floats that
  had to be sent before; codec cost alone, the list already built.
- ``list[float] + tolist/asarray``: the same plus what a stage holding an
  array pays to get there and back (``arr.tolist()``, ``np.asarray(list, float32)``).
- ``pickle (protocol 5)`` of the message holding the array.
- ``ndarray (json fallback)``: base64 in the JSON format, decoded with ``from_json``.

The same for a batch of 32 embeddings in one message (96 KiB), where the
fixed cost of a message (envelope, one hook call) no longer dominates.

Then end-to-end throughput on the memory bus (send -> async for, decode
included) with embedding messages vs the typical ~380-byte message.

usage: python benchmarks/bench_arrays.py [--n 20000] [--runs 5] [--bus-n 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from mlops_async import Codec, Consumer, MessageBuilder, MessageType, MLOpsMessage, Producer
from mlops_async.arrays import from_json

from _common import median_of, save, table, typical_message

DIM = 768


def with_embedding(value: Any) -> MLOpsMessage:
    return (MessageBuilder().with_msg_type(MessageType.DATA)
            .with_argument("embedding", value).build())


def per_op_ns(n: int, fn: Callable[[Any], Any], item: Any) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn(item)
    return (time.perf_counter_ns() - t0) / n


def codec_rows(n: int, runs: int, shape: tuple[int, ...]) -> list[dict[str, Any]]:
    emb = np.random.default_rng(0).random(shape, dtype=np.float32)
    as_array, as_list = with_embedding(emb), with_embedding(emb.tolist())
    mp: Codec[MLOpsMessage] = Codec()
    js: Codec[MLOpsMessage] = Codec(format="json")

    def measure(enc: Callable[[Any], Any], enc_in: Any, dec: Callable[[Any], Any],
                dec_in: Any) -> tuple[float, float]:
        e, _ = median_of(runs, lambda: per_op_ns(n, enc, enc_in))
        d, _ = median_of(runs, lambda: per_op_ns(n, dec, dec_in))
        return e, d

    def dumps(m: MLOpsMessage) -> bytes:
        return pickle.dumps(m, protocol=5)

    def json_decode(data: bytes) -> Any:  # arguments are untyped: from_json makes the array
        return from_json(js.decode(data).additional_arguments)

    cases: dict[str, tuple[Callable[[Any], Any], Any, Callable[[Any], Any], bytes]] = {
        "ndarray (msgpack ext)": (mp.encode, as_array, mp.decode, mp.encode(as_array)),
        "list[float] (msgpack)": (mp.encode, as_list, mp.decode, mp.encode(as_list)),
        "pickle (protocol 5)": (dumps, as_array, pickle.loads, dumps(as_array)),
        "ndarray (json fallback)": (js.encode, as_array, json_decode, js.encode(as_array)),
    }
    rows = []
    for name, (enc, enc_in, dec, dec_in) in cases.items():
        e, d = measure(enc, enc_in, dec, dec_in)
        rows.append({"case": name, "bytes": len(dec_in), "encode_ns": e, "decode_ns": d})
    # What a stage holding an array pays to use the list form: convert, then the codec.
    plain = emb.tolist()
    to_list, _ = median_of(runs, lambda: per_op_ns(n, np.ndarray.tolist, emb))
    to_array, _ = median_of(runs, lambda: per_op_ns(
        n, lambda v: np.asarray(v, dtype=np.float32), plain))
    listed = rows[1]
    rows.insert(2, {"case": "list[float] + tolist/asarray", "bytes": listed["bytes"],
                    "encode_ns": listed["encode_ns"] + to_list,
                    "decode_ns": listed["decode_ns"] + to_array})
    raw = emb.nbytes
    base = rows[0]
    for r in rows:
        r["shape"] = "x".join(map(str, shape))
        r["x_raw_bytes"] = round(r["bytes"] / raw, 3)
        r["encode_x_array"] = round(r["encode_ns"] / base["encode_ns"], 1)
        r["decode_x_array"] = round(r["decode_ns"] / base["decode_ns"], 1)
    return rows


async def bus_rate(msgs: list[MLOpsMessage], n: int) -> float:
    url = f"memory://bench-arrays-{uuid.uuid4().hex[:6]}"
    async with Consumer(url, topic="t", group="g") as c, Producer(url, topic="t") as p:
        async def consume() -> None:
            k = 0
            async for _ in c:
                k += 1
                if k == n:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for i in range(n):
            await p.send(msgs[i % len(msgs)])
        await task
        return n / (time.perf_counter() - t0)


def bus_rows(n: int, runs: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    pool = 1000  # distinct messages, cycled: n lists of 768 floats would not fit in memory
    kinds = {
        "typical message (~380 B, no array)": [typical_message(i) for i in range(pool)],
        "768-float32 embedding as ndarray": [
            with_embedding(rng.random(DIM, dtype=np.float32)) for _ in range(pool)],
        "768-float32 embedding as list[float]": [
            with_embedding(rng.random(DIM, dtype=np.float32).tolist()) for _ in range(pool)],
    }
    rows = []
    for name, msgs in kinds.items():
        rate, values = median_of(runs, lambda msgs=msgs: asyncio.run(bus_rate(msgs, n)))
        rows.append({"messages": name, "msg_per_s": rate, "runs": [round(v) for v in values],
                     "MB_per_s": rate * len(Codec().encode(msgs[0])) / 1e6})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000, help="codec operations per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bus-n", type=int, default=50_000, help="messages per memory-bus run")
    args = ap.parse_args()
    codec = codec_rows(args.n, args.runs, (DIM,))
    # A batch of 32 embeddings in one message: where the fixed cost per message fades.
    batch = codec_rows(max(1, args.n // 32), args.runs, (32, DIM))
    columns = ["case", "shape", "bytes", "x_raw_bytes", "encode_ns", "decode_ns",
               "encode_x_array", "decode_x_array"]
    print(table(codec, columns))
    print()
    print(table(batch, columns))
    bus = bus_rows(args.bus_n, max(1, args.runs // 2))
    print()
    print(table(bus, ["messages", "msg_per_s", "MB_per_s"]))
    targets: dict[str, float] = {}
    for rows, label in ((codec, "768"), (batch, "32x768")):
        array, listed, converted = rows[0], rows[1], rows[2]
        targets |= {
            f"{label}: payload_x_raw_array_bytes": array["x_raw_bytes"],
            f"{label}: encode_x_faster_than_list": listed["encode_x_array"],
            f"{label}: decode_x_faster_than_list": listed["decode_x_array"],
            f"{label}: encode_x_faster_than_list_with_conversion": converted["encode_x_array"],
            f"{label}: decode_x_faster_than_list_with_conversion": converted["decode_x_array"],
        }
    print()
    for k, v in targets.items():
        print(f"{k}: {v}")
    out = save("arrays", codec + batch, {"n": args.n, "runs": args.runs, "bus_n": args.bus_n,
                                 "memory_bus": bus, "targets": targets})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
