"""numpy arrays as payloads: the msgpack extension, the JSON fallback, numpy staying optional."""

from __future__ import annotations

import base64
import gc
import json
import struct
import subprocess
import sys
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from mlops_async import (
    App,
    Consumer,
    DecodeError,
    EncodeError,
    MessageBuilder,
    MessageType,
    Producer,
)
from mlops_async.arrays import EXT_NDARRAY, JSON_TAG, from_json, schema_hook
from mlops_async.codec import Codec


class Embedded(msgspec.Struct):
    """A user schema with array fields, as a feature pipeline would declare one."""

    user: str
    embedding: npt.NDArray[np.float32]
    extra: np.ndarray | None = None


def msg_with(**args: Any) -> Any:
    return MessageBuilder().with_msg_type(MessageType.DATA).with_additional_arguments(args).build()


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype  # byte order included
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)


DTYPES = ["?", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8",
          "<c8", "<c16", ">f4", ">i8"]
SHAPES = [(), (0,), (7,), (768,), (3, 4), (2, 3, 4), (4, 0, 2)]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    arr = rng.normal(size=shape) * 100
    if np.dtype(dtype).kind == "c":
        arr = arr + 1j * rng.normal(size=shape)
    return np.asarray(arr).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_every_dtype_and_shape(dtype: str, shape: tuple[int, ...]) -> None:
    codec = Codec()
    arr = sample(dtype, shape)
    got = codec.decode(codec.encode(msg_with(a=arr))).additional_arguments["a"]
    same(got, arr)


@pytest.mark.parametrize("order", ["C", "F"])
def test_layout_is_kept(order: str) -> None:
    arr = np.asarray(np.arange(24, dtype="<f8").reshape(2, 3, 4), order=order)  # type: ignore[call-overload]
    codec = Codec()
    got = codec.decode(codec.encode(msg_with(a=arr))).additional_arguments["a"]
    same(got, arr)
    assert got.flags.f_contiguous == (order == "F")
    assert got.flags.c_contiguous == (order == "C")


def test_strided_view_is_sent_by_value() -> None:
    base = np.arange(100, dtype="<i4").reshape(10, 10)
    view = base[::2, 1::3]
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    codec = Codec()
    same(codec.decode(codec.encode(msg_with(a=view))).additional_arguments["a"], view)


def test_decoded_array_is_a_read_only_view_of_the_payload() -> None:
    # Payloads below 64 KiB are copied once before decoding (cheaper than a view);
    # an array large enough for a copy to matter is read in place.
    codec = Codec()
    arr = np.linspace(0, 1, 32_768, dtype="<f4")
    payload = codec.encode(msg_with(a=arr))
    got = codec.decode(payload).additional_arguments["a"]
    start = np.frombuffer(payload, np.uint8).__array_interface__["data"][0]
    at = got.__array_interface__["data"][0]
    assert start <= at and at + got.nbytes <= start + len(payload)  # no copy: inside the payload
    assert not got.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 2.0
    del payload
    gc.collect()
    same(got, arr)  # the view keeps what it reads alive
    owned = got.copy()
    owned[0] = 2.0


def test_wire_format_is_the_documented_extension() -> None:
    arr = np.array([[1.5, -2.0, 3.25]], dtype="<f4")
    payload = Codec().encode(msg_with(a=arr))
    decoded = msgspec.msgpack.decode(payload[1:])
    ext = decoded["additional_arguments"]["a"]
    assert isinstance(ext, msgspec.msgpack.Ext) and ext.code == EXT_NDARRAY == 1
    data = ext.data
    version, flags, ndim, dlen = struct.unpack_from("<BBBB", data)
    assert (version, flags, ndim, dlen) == (1, 0, 2, 3)
    assert data[4:7] == b"<f4"
    assert struct.unpack_from("<2Q", data, 7) == (1, 3)
    assert data[23:] == arr.tobytes()
    assert len(data) - 23 == arr.nbytes  # 23 bytes of header, the rest is the array itself


def test_embedding_payload_is_close_to_the_raw_bytes() -> None:
    arr = np.zeros(768, dtype="<f4")
    payload = Codec().encode(msg_with(embedding=arr))
    assert len(payload) <= 1.05 * arr.nbytes


def test_typed_fields_in_both_formats() -> None:
    emb = np.arange(8, dtype="<f4")
    extra = np.asfortranarray(np.arange(6, dtype=">i8").reshape(2, 3))
    for fmt in ("msgpack", "json"):
        codec: Codec[Embedded] = Codec(Embedded, format=fmt)  # type: ignore[arg-type]
        got = codec.decode(codec.encode(Embedded("u1", emb, extra)))
        same(got.embedding, emb)
        assert got.extra is not None
        same(got.extra, extra)
        got = codec.decode(codec.encode(Embedded("u2", emb)))
        assert got.extra is None


def test_typed_field_checks_the_annotated_dtype() -> None:
    for fmt in ("msgpack", "json"):
        codec: Codec[Embedded] = Codec(Embedded, format=fmt)  # type: ignore[arg-type]
        payload = codec.encode(Embedded("u", np.zeros(3, dtype="<f8")))
        with pytest.raises(DecodeError, match="float32"):
            codec.decode(payload)


def test_typed_field_refuses_what_is_not_an_array() -> None:
    class Loose(msgspec.Struct):
        user: str
        embedding: Any

    payload = Codec(Loose).encode(Loose("u", [1.0, 2.0]))
    with pytest.raises(DecodeError, match="Expected an array"):
        Codec(Embedded).decode(payload)


def test_json_fallback_is_readable_without_numpy() -> None:
    arr = np.arange(6, dtype="<i2").reshape(2, 3, order="F")
    payload = Codec(format="json").encode(msg_with(a=arr))
    doc = json.loads(payload[1:])
    tagged = doc["additional_arguments"]["a"]
    assert set(tagged) == {JSON_TAG, "dtype", "shape"}
    assert tagged["dtype"] == "<i2" and tagged["shape"] == [2, 3]
    assert base64.b64decode(tagged[JSON_TAG]) == np.ascontiguousarray(arr).tobytes()  # C order


def test_json_untyped_values_come_back_with_from_json() -> None:
    arr = np.arange(4, dtype="<f8")
    codec = Codec(format="json")
    payload = codec.encode(msg_with(a=arr, nested=[{"b": arr}], n=3))
    args = codec.decode(payload).additional_arguments
    assert isinstance(args["a"], dict)  # typed Any: the tagged object, as a foreign reader sees it
    restored = from_json(args)
    same(restored["a"], arr)
    same(restored["nested"][0]["b"], arr)
    assert restored["n"] == 3


def test_from_json_refuses_a_bad_object() -> None:
    with pytest.raises(ValueError, match="needs 16"):
        from_json({JSON_TAG: base64.b64encode(b"abc").decode(), "dtype": "<f8", "shape": [2]})
    with pytest.raises(ValueError, match="not numeric"):
        from_json({JSON_TAG: "", "dtype": "|O", "shape": [0]})
    with pytest.raises(ValueError, match="not an encoded array"):
        from_json({JSON_TAG: "", "shape": [0]})


def test_numpy_scalars_travel_as_numbers() -> None:
    for fmt in ("msgpack", "json"):
        codec = Codec(format=fmt)  # type: ignore[arg-type]
        args = codec.decode(codec.encode(msg_with(
            acc=np.float64(0.93), n=np.int64(7), ok=np.bool_(True)))).additional_arguments
        assert args == {"acc": 0.93, "n": 7, "ok": True}


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_non_numeric_arrays_are_refused_with_a_clear_error(fmt: str) -> None:
    codec = Codec(format=fmt)  # type: ignore[arg-type]
    for bad in (np.array(["a", "b"]), np.array([object()]),
                np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")])):
        with pytest.raises(EncodeError, match="only bool and numeric"):
            codec.encode(msg_with(a=bad))
    with pytest.raises(EncodeError, match="unsupported"):
        codec.encode(msg_with(a=object()))


def ext_payload(data: bytes, code: int = EXT_NDARRAY) -> bytes:
    body = {"id": "x", "created_at": 1.0, "msg_type": "DATA",
            "additional_arguments": {"a": msgspec.msgpack.Ext(code, data)}}
    return b"\x01" + msgspec.msgpack.encode(body)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x01", "shorter than its header"),
    (b"\x09\x00\x01\x03<f4" + struct.pack("<Q", 1) + b"\0\0\0\0", "version 9 is unknown"),
    (b"\x01\x00\x02\x03<f4" + struct.pack("<Q", 1), "shorter than its header says"),
    (b"\x01\x00\x01\x03<f4" + struct.pack("<Q", 2) + b"\0\0\0\0", "needs 8"),
    (b"\x01\x00\x01\x02|O" + struct.pack("<Q", 1) + b"\0" * 8, "not numeric"),
    (b"\x01\x00\x01\x03zz9" + struct.pack("<Q", 1) + b"\0" * 8, "not understood"),
])
def test_malformed_extension_is_a_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        Codec().decode(ext_payload(data))


def test_foreign_extension_codes_pass_through() -> None:
    got = Codec().decode(ext_payload(b"abc", code=42)).additional_arguments["a"]
    assert got == msgspec.msgpack.Ext(42, b"abc")


def test_schema_hook_describes_the_json_fallback() -> None:
    schema = schema_hook(npt.NDArray[np.float32])
    assert schema["required"] == [JSON_TAG, "dtype", "shape"]
    with pytest.raises(NotImplementedError):
        schema_hook(complex)


async def test_memory_bus_end_to_end() -> None:
    url = "memory://arrays-unit"
    emb = np.random.default_rng(1).random(768, dtype=np.float32)
    async with Producer(url, topic="emb", schema=Embedded) as p, Consumer(
        url, topic="emb", group="g", schema=Embedded, auto_offset_reset="earliest"
    ) as c:
        await p.send(Embedded("u", emb), flush=True)
        got = await c.get_messages(max_messages=1, timeout=5)
    same(got[0].embedding, emb)


class Scaled(msgspec.Struct):
    user: str
    scaled: npt.NDArray[np.float64]


async def test_engine_handlers_take_and_return_arrays() -> None:
    url = "memory://arrays-engine"
    app = App("scaler", url=url)
    app.queue("rows", schema=f"{__name__}:Embedded")
    app.queue("scaled", schema=f"{__name__}:Scaled")

    @app.handler(input="rows", outputs=["scaled"])
    async def scale(row: Embedded) -> list[tuple[str, Any]]:
        out = row.embedding.astype(np.float64) * 2  # the received view is read-only: new array
        if row.user.endswith("1"):  # a dict output is converted to the queue's schema
            return [("scaled", {"user": row.user, "scaled": out})]
        return [("scaled", Scaled(row.user, out))]

    async with app, Producer(url, topic="rows", schema=Embedded) as p, Consumer(
        url, topic="scaled", group="g", schema=Scaled, auto_offset_reset="earliest"
    ) as c:
        await p.send_many([Embedded(f"u{i}", np.full(4, i, np.float32)) for i in range(2)],
                          flush=True)
        got: list[Scaled] = []
        for _ in range(30):  # bounded: a missing output fails the test, never hangs it
            got += await c.get_messages(max_messages=2, timeout=1)
            if len(got) >= 2:
                break
    by_user = {m.user: m.scaled for m in got}
    same(by_user["u0"], np.zeros(4))
    same(by_user["u1"], np.full(4, 2.0))


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_numpy_is_not_imported_unless_used() -> None:
    proc = run_python(
        "import sys\n"
        "import mlops_async, mlops_async.arrays\n"
        "from mlops_async import MessageBuilder, MessageType, Producer, Consumer\n"
        "from mlops_async.codec import Codec\n"
        "for fmt in ('msgpack', 'json'):\n"
        "    c = Codec(format=fmt)\n"
        "    m = MessageBuilder().with_msg_type(MessageType.DATA)"
        ".with_argument('x', [1.0]).build()\n"
        "    assert c.decode(c.encode(m)).additional_arguments == {'x': [1.0]}\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_without_numpy_an_array_stays_an_opaque_extension() -> None:
    payload = Codec().encode(msg_with(a=np.arange(3, dtype="<i4"), n=1))
    proc = run_python(
        "import sys\n"
        "sys.modules['numpy'] = None  # as if numpy were not installed: importing it fails\n"
        "import msgspec\n"
        "from mlops_async.codec import Codec\n"
        f"payload = {payload!r}\n"
        "msg = Codec().decode(payload)\n"
        "args = msg.additional_arguments\n"
        "assert isinstance(args['a'], msgspec.msgpack.Ext) and args['a'].code == 1, args\n"
        "assert args['n'] == 1\n"
        "assert Codec().encode(msg) == payload  # a relay without numpy passes arrays on intact\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
