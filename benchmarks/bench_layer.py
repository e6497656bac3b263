"""The shared layer's own cost: Consumer and Producer over a zero-cost backend.

The broker benchmarks (bench_kafka, bench_redis, bench_memory) measure the
library and a broker client together. Here the backend costs nothing: a fetch
hands over ready-made deliveries, a publish returns at once. What is left is
what ``Consumer``/``Producer`` themselves cost per message, next to the work no
consumer or producer can skip:

- the raw msgspec loop (decode, or encode), synchronous: the baseline of every ratio;
- the same decode holding each 1000 messages in a list until the next 1000 (what
  a batch consumer hands out; holding costs cache misses of its own);
- the floor of any ``async for`` consumer: a class whose ``async def __anext__``
  pops a delivery, decodes it and sets its topic, with no acknowledgement
  bookkeeping, rebalance check, dead letters or counters (what remains of a
  consumer with at-least-once delivery taken out);
- the floor of any ``await send()`` producer: encode after the marker, queue the
  bytes, let a sender task take each full batch (no bounds, counters or
  confirmations).

So a broker benchmark's ratio to its raw client is bounded by this one: a
``kafka+confluent://`` ``async for`` cannot reach more of ``consume()`` + decode
than the floor row reaches of the raw decode loop, before the client's own
per-record work. Times are the thread's CPU time (best of --runs), so another
process on the machine changes them little.

usage: python benchmarks/bench_layer.py [--n 200000] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from msgspec.structs import force_setattr

from mlops_async import Codec, Consumer, MLOpsMessage, Producer
from mlops_async.backends.base import Backend, Delivery, Record, Subscription

from _common import save, table, typical_message

CHUNK = 1000
POSITION = (("t", 0), 0)


class _Sub(Subscription):
    """Hands out ``n`` deliveries of pre-encoded values, ``max_records`` at a time."""

    def __init__(self, values: list[bytes], n: int) -> None:
        self.values, self.left = values, n

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        k = min(max_records, self.left, len(self.values))
        self.left -= k
        values = self.values
        return [Delivery("t", 0, i, values[i], None, None, POSITION) for i in range(k)]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def close(self) -> None:
        return None


class ZeroBackend(Backend):
    """A backend that costs nothing: publish returns at once, fetch hands over ready values."""

    scheme = "zero"

    def __init__(self, values: list[bytes] | None = None, n: int = 0) -> None:
        self.values, self.n = values or [], n

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, records: Sequence[Record]) -> None:
        return None

    async def subscribe(self, topics: Sequence[str], *, group: str | None,
                        auto_offset_reset: Any) -> Subscription:
        return _Sub(self.values, self.n)


class FloorConsumer:
    """The least an ``async for`` consumer does per message: pop, decode, set the topic."""

    def __init__(self, values: list[bytes], n: int) -> None:
        self.sub = _Sub(values, n)
        self.buf: deque[Delivery] = deque()
        self.decode = msgspec.msgpack.Decoder(MLOpsMessage).decode

    def __aiter__(self) -> FloorConsumer:
        return self

    async def __anext__(self) -> MLOpsMessage:
        buf = self.buf
        if not buf:
            buf.extend(await self.sub.fetch(CHUNK, 0))
        d = buf.popleft()
        msg: MLOpsMessage = self.decode(d.value[1:])  # type: ignore[index]
        force_setattr(msg, "topic", d.topic)
        return msg


class FloorProducer:
    """The least an ``await send()`` producer does per message: encode after the marker,
    queue it, and let a sender take each full batch; no bounds, counters, records or
    confirmations (what remains of a producer with at-least-once taken out)."""

    def __init__(self, marker: bytes) -> None:
        self.buf: list[bytes] = []
        self.scratch = bytearray(marker)
        self.encode_into = msgspec.msgpack.Encoder().encode_into
        self.sender = asyncio.get_running_loop().create_task(self._run())

    async def send(self, msg: MLOpsMessage) -> None:
        self.encode_into(msg, self.scratch, 1)
        self.buf.append(bytes(self.scratch))
        if len(self.buf) >= CHUNK:
            await asyncio.sleep(0)  # the sender takes the batch

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.buf = []  # the batch "sent": dropped

    async def close(self) -> None:
        self.sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sender


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    n = args.n - args.n % CHUNK
    msgs = [typical_message(i) for i in range(CHUNK)]
    codec: Codec[MLOpsMessage] = Codec()
    values = [codec.encode(m) for m in msgs]
    bare = [v[1:] for v in values]  # what the raw loop decodes: no marker
    send_msgs = msgs * (n // CHUNK)
    gc.freeze()
    dec = msgspec.msgpack.Decoder(MLOpsMessage)
    enc = msgspec.msgpack.Encoder()

    def raw_decode() -> None:
        decode = dec.decode
        for _ in range(n // CHUNK):
            for v in bare:
                decode(v)

    def raw_decode_held() -> None:
        decode, held = dec.decode, []
        for _ in range(n // CHUNK):
            held[:] = [decode(v) for v in bare]

    async def floor() -> None:
        k = 0
        async for _ in FloorConsumer(values, n):
            k += 1
            if k == n:
                return

    async def library(mode: str) -> None:
        async with Consumer(backend=ZeroBackend(values, n), topic="t", group="g") as c:
            k = 0
            if mode == "iter":
                async for _ in c:
                    k += 1
                    if k == n:
                        return
            else:
                async for batch in c.batches(max_messages=CHUNK, max_wait=0):
                    k += len(batch)
                    if k >= n:
                        return

    def raw_encode() -> None:
        encode = enc.encode
        for m in send_msgs:
            encode(m)

    async def floor_send() -> None:
        p = FloorProducer(values[0][:1])
        for m in send_msgs:
            await p.send(m)
        await p.close()

    async def send(many: bool) -> None:
        async with Producer(backend=ZeroBackend(), topic="t") as p:
            if many:
                for i in range(0, n, CHUNK):
                    await p.send_many(send_msgs[i:i + CHUNK])
            else:
                for m in send_msgs:
                    await p.send(m)
            await p.flush()

    paths: dict[str, tuple[str, Callable[[], Any]]] = {
        "consume: raw msgspec decode loop": ("decode", raw_decode),
        "consume: raw decode, each 1000 held in a list": ("decode", raw_decode_held),
        "consume: floor of any async for (pop, decode, topic)": (
            "decode", lambda: asyncio.run(floor())),
        "consume: library async for (zero-cost backend)": (
            "decode", lambda: asyncio.run(library("iter"))),
        "consume: library batches(1000) (zero-cost backend)": (
            "decode", lambda: asyncio.run(library("batches"))),
        "produce: raw msgspec encode loop": ("encode", raw_encode),
        "produce: floor of any await send() (encode, queue, batch off)": (
            "encode", lambda: asyncio.run(floor_send())),
        "produce: library await send() (zero-cost backend)": (
            "encode", lambda: asyncio.run(send(False))),
        "produce: library send_many(1000) (zero-cost backend)": (
            "encode", lambda: asyncio.run(send(True))),
    }
    best: dict[str, float] = {}
    for _ in range(args.runs):  # rounds interleave every path
        for name, (_, fn) in paths.items():
            t = timed(fn)
            best[name] = min(best.get(name, t), t)
    base = {"decode": best["consume: raw msgspec decode loop"],
            "encode": best["produce: raw msgspec encode loop"]}
    rows = []
    for name, (kind, _) in paths.items():
        ns = 1e9 * best[name] / n
        rows.append({"path": name, "msg_per_s": n / best[name], "ns_per_msg": ns,
                     "over_raw_ns": ns - 1e9 * base[kind] / n,
                     "x_raw": base[kind] / best[name]})
    print(f"{n:,} messages of {len(values[0])} B, thread CPU time, best of {args.runs}")
    print(table(rows, ["path", "msg_per_s", "ns_per_msg", "over_raw_ns", "x_raw"]))
    print(f"saved {save('layer', rows, {'n': n, 'runs': args.runs})}")


if __name__ == "__main__":
    main()
