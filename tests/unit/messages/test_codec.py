from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_async import (
    Codec,
    DecodeError,
    EncodeError,
    MessageTooLarge,
    MessageType,
    MLOpsMessage,
)
from mlops_async.codec import JSON_V1, MSGPACK_V1

from ...conftest import make_msg

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)

messages = st.builds(
    MLOpsMessage,
    id=st.text(min_size=1, max_size=40),
    created_at=st.floats(0, 4e9),
    msg_type=st.sampled_from(list(MessageType)),
    creator_type=st.none() | st.text(max_size=20),
    creator=st.none() | st.text(max_size=20),
    user_message=st.none() | st.text(max_size=200),
    next_task=st.none() | st.text(max_size=20),
    stage=st.none() | st.text(max_size=20),
    correlation_id=st.none() | st.text(max_size=40),
    additional_arguments=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
)


@given(messages, st.sampled_from(["msgpack", "json"]))
@settings(max_examples=300, deadline=None)
def test_round_trip(msg: MLOpsMessage, fmt: Any) -> None:
    codec: Codec[MLOpsMessage] = Codec(format=fmt)
    assert codec.decode(codec.encode(msg)) == msg


def test_payload_carries_a_format_marker_and_any_reader_reads_both() -> None:
    msg = make_msg(1)
    mp = Codec(format="msgpack").encode(msg)
    js = Codec(format="json").encode(msg)
    assert mp[0] == MSGPACK_V1 and js[0] == JSON_V1
    reader: Codec[MLOpsMessage] = Codec()
    assert reader.decode(mp) == reader.decode(js) == msg


def test_bare_json_from_foreign_producers_is_read() -> None:
    raw = b'{"id":"x","created_at":1.5,"msg_type":"START","user_message":"hi"}'
    msg = Codec().decode(raw)
    assert msg.user_message == "hi" and msg.msg_type is MessageType.START


def test_topic_is_set_by_the_reader() -> None:
    codec: Codec[MLOpsMessage] = Codec()
    assert codec.decode(codec.encode(make_msg()), topic="features").topic == "features"


def test_unknown_fields_are_ignored_for_schema_evolution() -> None:
    # A newer producer added a field: older readers keep working.
    raw = b'{"id":"x","created_at":1.0,"msg_type":"DATA","field_from_the_future":[1,2]}'
    assert Codec().decode(raw).id == "x"


class Old(msgspec.Struct, kw_only=True):
    id: str
    msg_type: str


def test_old_readers_read_new_messages_and_vice_versa() -> None:
    old: Codec[Old] = Codec(Old)
    new: Codec[MLOpsMessage] = Codec()
    assert old.decode(new.encode(make_msg(3))).msg_type == "DATA"
    # An older writer that knew fewer fields: missing optional fields default.
    raw = old.encode(Old(id="a", msg_type="INFO"))
    with pytest.raises(DecodeError, match="created_at"):
        new.decode(raw)  # created_at is required: the error names it


def _mp(obj: Any) -> bytes:
    return bytes([MSGPACK_V1]) + msgspec.msgpack.encode(obj)


GOOD = {"id": "x", "created_at": 1.0, "msg_type": "DATA"}

BAD_INPUTS = {
    "empty": b"",
    "marker only": bytes([MSGPACK_V1]),
    "truncated": Codec().encode(make_msg())[:20],
    "trailing garbage": Codec().encode(make_msg()) + b"\x00garbage",
    "top-level list": _mp([1, 2, 3]),
    "top-level int": _mp(5),
    "missing id": _mp({"created_at": 1.0, "msg_type": "DATA"}),
    "null id": _mp({**GOOD, "id": None}),
    "null msg_type": _mp({**GOOD, "msg_type": None}),
    "wrong type created_at": _mp({**GOOD, "created_at": "yesterday"}),
    "wrong type user_message": _mp({**GOOD, "user_message": 42}),
    "list additional_arguments": _mp({**GOOD, "additional_arguments": [1, 2]}),
    "string additional_arguments": _mp({**GOOD, "additional_arguments": "x"}),
    "invalid utf-8 json": bytes([JSON_V1]) + b'{"id":"\xff\xfe","created_at":1,"msg_type":"DATA"}',
    "invalid utf-8 msgpack": bytes([MSGPACK_V1]) + b"\x81\xa2id\xa2\xff\xfe",
    "huge int": bytes([JSON_V1])
    + b'{"id":"x","created_at":1'
    + b"0" * 400
    + b',"msg_type":"DATA"}',
    "NaN in json": bytes([JSON_V1]) + b'{"id":"x","created_at":NaN,"msg_type":"DATA"}',
    "deeply nested msgpack": bytes([MSGPACK_V1]) + b"\x84\xa2id\xa1x\xaacreated_at\x01\xa8msg_type"
    b"\xa4DATA\xb4additional_arguments" + b"\x81\xa1a" * 50_000 + b"\xc0",
    "deeply nested json": bytes([JSON_V1]) + b'{"id":"x","created_at":1,"msg_type":"DATA",'
    b'"additional_arguments":{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
    "protobuf-ish": b"\x08\x96\x01\x12\x07testing",
    "avro/confluent magic": b"\x00\x00\x00\x00\x01\x02abc",
    "plain text": b"hello world",
    "xml": b"<msg>hi</msg>",
    "json array": b'[{"id":"x"}]',
    "unknown future marker": b"\x7f\x00\x01",
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_decode_error_only(name: str) -> None:
    with pytest.raises(DecodeError) as info:
        Codec().decode(BAD_INPUTS[name], where="raw[0]@7")
    err = info.value
    assert "raw[0]@7" in str(err)
    assert err.payload == BAD_INPUTS[name]
    assert err.__cause__ is None  # no raw msgspec error leaks through the chain either


def test_nan_in_msgpack_is_a_valid_float() -> None:
    # msgpack can carry NaN; it is data, not an error, in additional_arguments.
    msg = Codec().decode(_mp({**GOOD, "additional_arguments": {"loss": math.nan}}))
    assert math.isnan(msg.additional_arguments["loss"])


def test_size_limit_checked_before_decoding() -> None:
    codec: Codec[MLOpsMessage] = Codec(max_size=1000)
    with pytest.raises(MessageTooLarge, match="1000"):
        codec.decode(b"\x01" + b"\x00" * 2000, where="t[0]@1")
    with pytest.raises(MessageTooLarge) as info:
        codec.encode(make_msg(blob="x" * 5000))
    assert info.value.size > 5000 and info.value.limit == 1000


def test_default_limit_is_one_mebibyte() -> None:
    codec: Codec[MLOpsMessage] = Codec()
    assert codec.max_size == 1024 * 1024
    codec.encode(make_msg(blob="x" * 1_000_000))
    with pytest.raises(MessageTooLarge):
        codec.encode(make_msg(blob="x" * 1_100_000))


def test_unencodable_value_raises_encode_error() -> None:
    msg = make_msg(obj=object())
    with pytest.raises(EncodeError, match="object"):
        Codec().encode(msg)


class Reading(msgspec.Struct, frozen=True):
    sensor: str
    value: float


def test_user_schema_decodes_straight_into_the_struct() -> None:
    codec: Codec[Reading] = Codec(Reading)
    assert codec.decode(codec.encode(Reading("a", 1.5)), topic="ignored") == Reading("a", 1.5)
    with pytest.raises(DecodeError, match="Reading"):
        codec.decode(codec.encode(Reading("a", 1.5))[:-3])


def test_bad_options_rejected() -> None:
    with pytest.raises(ValueError, match="format"):
        Codec(format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size"):
        Codec(max_size=0)


def test_decode_many_decodes_a_batch_with_each_topic() -> None:
    codec: Codec[MLOpsMessage] = Codec()
    msgs = [make_msg(i) for i in range(5)]
    out = codec.decode_many([codec.encode(m) for m in msgs], ["a", "b", "a", "c", "a"])
    assert out is not None
    assert [m.user_message for m in out] == [f"record {i}" for i in range(5)]
    assert [m.topic for m in out] == ["a", "b", "a", "c", "a"]
    assert codec.decode_many([], []) == []


@pytest.mark.parametrize(
    "odd",
    [
        None,  # a tombstone
        b"",
        b"\x01\xc1",  # our marker, then bytes msgpack never writes
        b"\x09garbage",  # an unknown marker
        b'{"user_msg": "bare json"}',  # readable, but by decode() only
        "a str from a foreign driver",
        b"\x01" + b"\x00" * (70 * 1024),  # a large payload: read in place by decode()
    ],
)
def test_decode_many_hands_any_odd_payload_back_to_decode(odd: Any) -> None:
    codec: Codec[MLOpsMessage] = Codec()
    good = codec.encode(make_msg())
    assert codec.decode_many([good, odd, good], ["t", "t", "t"]) is None


def test_decode_many_respects_max_size() -> None:
    codec: Codec[MLOpsMessage] = Codec(max_size=200)
    small = codec.encode(make_msg())
    big = small + b"\x00" * 200
    assert codec.decode_many([small, big], ["t", "t"]) is None
