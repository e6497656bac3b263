"""Encode/decode cost of a typical MLOpsMessage: mlops_async's codec vs pydantic v2 vs json.

Then what immutability costs a decode: ``MLOpsMessage`` against a plain frozen
msgspec Struct with the same fields and options, through the same codec, in
interleaved rounds of thread CPU time (best of ``--runs``); target <= 1.15x. A
second pair also reads ``msg_type`` and ``additional_arguments`` once, where the
message pays for its read-only arguments (copied on first read).

usage: python benchmarks/bench_codec.py [--n 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import msgspec
import pydantic

from mlops_async import Codec, MLOpsMessage

from _common import median_of, save, table, typical_message


class PydMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)
    id: str
    created_at: float
    msg_type: str
    creator_type: str | None = None
    creator: str | None = None
    user_message: str | None = None
    next_task: str | None = None
    stage: str | None = None
    topic: str | None = None
    correlation_id: str | None = None
    additional_arguments: dict[str, Any] = {}


class PlainMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """MLOpsMessage's fields and options, without its read-only arguments or enum mapping."""

    id: str
    created_at: float
    msg_type: str
    creator_type: str | None = None
    creator: str | None = None
    user_message: str | None = None
    next_task: str | None = None
    stage: str | None = None
    topic: str | None = None
    correlation_id: str | None = None
    additional_arguments: dict[str, Any] = {}


DECODE_TARGET = 1.15


def decode_ns(decode: Any, payloads: list[bytes], read: bool) -> float:
    t0 = time.thread_time_ns()
    if read:
        for p in payloads:
            m = decode(p)
            m.msg_type, m.additional_arguments  # noqa: B018
    else:
        for p in payloads:
            decode(p)
    return (time.thread_time_ns() - t0) / len(payloads)


def immutability_rows(payloads: list[bytes], runs: int) -> list[dict[str, Any]]:
    """MLOpsMessage decode against the plain Struct's, A/B in the same rounds."""
    ours, plain = Codec().decode, Codec(PlainMessage).decode
    chunk = payloads[:2000]  # short rounds: a noisy neighbour spoils fewer of them
    rows = []
    for read in (False, True):
        a: list[float] = []
        b: list[float] = []
        for _ in range(max(runs, 5) * 10):
            a.append(decode_ns(ours, chunk, read))
            b.append(decode_ns(plain, chunk, read))
        what = "decode + read msg_type, additional_arguments" if read else "decode"
        rows.append({"case": what, "mlops_ns": min(a), "plain_struct_ns": min(b),
                     "ratio": min(a) / min(b), "target": None if read else DECODE_TARGET})
    return rows


def per_op_ns(n: int, fn: Any, items: list[Any]) -> float:
    t0 = time.perf_counter_ns()
    for x in items:
        fn(x)
    return (time.perf_counter_ns() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.n
    msgs = [typical_message(i) for i in range(n)]
    as_dicts = [msgspec.to_builtins(m) for m in msgs]
    pyd = [PydMessage(**d) for d in as_dicts]

    mp: Codec[MLOpsMessage] = Codec()
    js: Codec[MLOpsMessage] = Codec(format="json")
    mp_bytes = [mp.encode(m) for m in msgs]
    js_bytes = [js.encode(m) for m in msgs]
    pyd_bytes = [p.model_dump_json().encode() for p in pyd]
    std_bytes = [json.dumps(d).encode() for d in as_dicts]
    adapter = PydMessage.model_validate_json

    cases = {
        "mlops_async msgpack": (mp.encode, msgs, mp.decode, mp_bytes),
        "mlops_async json": (js.encode, msgs, js.decode, js_bytes),
        "pydantic v2 json": (lambda p: p.model_dump_json(), pyd, adapter, pyd_bytes),
        "stdlib json (dict, no validation)": (json.dumps, as_dicts, json.loads, std_bytes),
    }
    rows = []
    for name, (enc, enc_in, dec, dec_in) in cases.items():
        e, _ = median_of(args.runs, lambda enc=enc, enc_in=enc_in: per_op_ns(n, enc, enc_in))
        d, _ = median_of(args.runs, lambda dec=dec, dec_in=dec_in: per_op_ns(n, dec, dec_in))
        rows.append({"codec": name, "encode_ns": e, "decode_ns": d, "round_trip_ns": e + d,
                     "bytes": len(dec_in[0])})
    base = rows[0]
    for r in rows:
        r["encode_x_slower"] = r["encode_ns"] / base["encode_ns"]
        r["decode_x_slower"] = r["decode_ns"] / base["decode_ns"]
    print(table(rows, ["codec", "bytes", "encode_ns", "decode_ns", "round_trip_ns",
                       "encode_x_slower", "decode_x_slower"]))
    imm = immutability_rows(mp_bytes, args.runs)
    print()
    print(table(imm, ["case", "mlops_ns", "plain_struct_ns", "ratio", "target"]))
    print(f"saved {save('codec', rows, {'n': n, 'runs': args.runs, 'immutability': imm})}")


if __name__ == "__main__":
    main()
