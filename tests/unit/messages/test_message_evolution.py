"""A built message is immutable all the way down; MessageType grows without breaking readers."""

from __future__ import annotations

import copy
import pickle

import msgspec
import pytest

from mlops_async import Codec, MessageBuilder, MessageType, MLOpsMessage


def built() -> MLOpsMessage:
    return (MessageBuilder().with_msg_type(MessageType.DATA)
            .with_additional_arguments({"k": [1, 2]}).with_argument("rows", 3).build())


@pytest.mark.parametrize("change", [
    lambda a: a.__setitem__("x", 1), lambda a: a.pop("k"), lambda a: a.update(x=1),
    lambda a: a.clear(), lambda a: a.setdefault("x", 1), lambda a: a.popitem(),
    lambda a: a.__delitem__("k"),
])
def test_arguments_of_a_built_or_received_message_cannot_change(change: object) -> None:
    for msg in (built(), Codec().decode(Codec().encode(built()))):
        with pytest.raises(TypeError, match="immutable"):
            change(msg.additional_arguments)  # type: ignore[operator]
        assert msg.additional_arguments["k"] == [1, 2]
    with pytest.raises(AttributeError):
        built().user_message = "x"  # type: ignore[misc]


def test_the_builder_stays_mutable_and_derives_copies() -> None:
    msg = built()
    other = msg.to_builder().with_argument("rows", 4).build()
    assert msg.additional_arguments["rows"] == 3 and other.additional_arguments["rows"] == 4
    assert pickle.loads(pickle.dumps(msg)) == msg and copy.deepcopy(msg) == msg
    assert msgspec.json.decode(msgspec.json.encode(msg))["additional_arguments"]["rows"] == 3


def test_an_unknown_message_type_is_delivered_and_readable() -> None:
    codec: Codec[MLOpsMessage] = Codec()
    for payload in (
        b"\x01" + msgspec.msgpack.encode({"id": "a", "created_at": 1.0,
                                          "msg_type": "RETRAIN_REQUESTED"}),
        b'{"id": "a", "created_at": 1.0, "msg_type": "RETRAIN_REQUESTED"}',  # foreign JSON
    ):
        msg = codec.decode(payload)
        assert msg.msg_type == "RETRAIN_REQUESTED" and msg.msg_type.value == "RETRAIN_REQUESTED"
        assert not isinstance(msg.msg_type, MessageType)
        # It travels on unchanged: a stage in the middle does not lose it.
        assert codec.decode(codec.encode(msg)).msg_type.value == "RETRAIN_REQUESTED"
    known = codec.decode(b"\x01" + msgspec.msgpack.encode(
        {"id": "a", "created_at": 1.0, "msg_type": "START"}))
    assert known.msg_type is MessageType.START


@pytest.mark.parametrize("payload", [
    b"\x01" + msgspec.msgpack.encode({"id": "a", "created_at": 1.0, "msg_type": "INFO",
                                      "additional_arguments": None, "stage": None}),
    b'{"id": "a", "created_at": 1.0, "msg_type": "INFO", "additional_arguments": null}',
], ids=["msgpack", "json"])
def test_a_nil_for_the_arguments_reads_as_no_arguments(payload: bytes) -> None:
    # Go's default for an unset map is nil: accepted like nil for every optional field.
    msg = Codec().decode(payload)
    assert msg.additional_arguments == {} and msg.get_additional_arguments() == {}
    with pytest.raises(TypeError, match="immutable"):
        msg.additional_arguments["x"] = 1  # type: ignore[index]
    assert b"additional_arguments" not in Codec().encode(msg)
    assert msg.msg_type is MessageType.INFO and msg.stage is None


def test_what_a_decoded_message_holds_is_read_only_on_every_read() -> None:
    codec: Codec[MLOpsMessage] = Codec()
    payload = codec.encode(built())
    msg = codec.decode(payload)
    first = msg.additional_arguments
    assert msg.additional_arguments is first  # frozen once, then the same object
    assert msg.msg_type is MessageType.DATA and msg.get_msg_type() is MessageType.DATA
    assert codec.encode(msg) == payload  # reading changed nothing on the wire
    assert msg == codec.decode(payload)
    for field in ("additional_arguments", "msg_type"):
        with pytest.raises(AttributeError):
            setattr(msg, field, {})


def test_a_directly_constructed_message_reads_its_arguments_read_only() -> None:
    msg = MLOpsMessage(id="a", created_at=1.0, msg_type="DATA", additional_arguments={"k": 1})
    assert msg.msg_type is MessageType.DATA
    with pytest.raises(TypeError, match="immutable"):
        msg.additional_arguments["k"] = 2  # type: ignore[index]
    changed = msgspec.structs.replace(msg, additional_arguments={"k": 3})
    assert changed.additional_arguments == {"k": 3}
    with pytest.raises(TypeError, match="immutable"):
        changed.additional_arguments.update(k=4)
    assert msg.additional_arguments == {"k": 1}


def test_a_subclass_with_more_fields_reads_the_same_way() -> None:
    class Scored(MLOpsMessage, frozen=True, kw_only=True):
        score: float = 0.0

    payload = Codec(Scored).encode(Scored(id="a", created_at=1.0, msg_type="DATA", score=0.5,
                                          additional_arguments={"k": [1]}))
    msg = Codec(Scored).decode(payload)
    assert msg.score == 0.5 and msg.msg_type is MessageType.DATA
    with pytest.raises(TypeError, match="immutable"):
        msg.additional_arguments.pop("k")
