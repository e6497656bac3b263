from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from mlops_async import Codec, InvalidMessage, MessageBuilder, MessageType, MLOpsMessage, Stage
from mlops_async.message import new_id


def test_builder_chains_and_builds_frozen_message() -> None:
    msg = (
        MessageBuilder()
        .with_msg_type(MessageType.START)
        .with_creator_type("ETL")
        .with_creator("ETL")
        .with_user_msg("Hello World")
        .with_next_task("Train")
        .build()
    )
    assert msg.msg_type is MessageType.START
    assert msg.user_message == "Hello World"
    assert msg.get_user_message() == "Hello World"
    assert msg.creator_type == "ETL" and msg.get_creator() == "ETL"
    assert msg.next_task == "Train"
    assert msg.stage is None and msg.get_stage() is None
    assert msg.topic is None
    assert msg.additional_arguments == {}
    assert len(msg.id) == 32
    assert abs(msg.created_at - time.time()) < 5
    with pytest.raises(AttributeError):
        msg.user_message = "changed"  # type: ignore[misc]


def test_later_calls_overwrite_earlier_ones() -> None:
    msg = (
        MessageBuilder()
        .with_msg_type("START")
        .with_msg_type(MessageType.COMPLETE)
        .with_user_msg("a")
        .with_user_msg("b")
        .with_stage(Stage.TRAIN)
        .with_stage("custom-stage")
        .build()
    )
    assert msg.msg_type is MessageType.COMPLETE
    assert msg.user_message == "b"
    assert msg.stage == "custom-stage"


def test_enums_are_accepted_as_plain_strings() -> None:
    msg = MessageBuilder().with_msg_type(MessageType.DATA).with_stage(Stage.EVALUATE).build()
    assert msg.stage == "EVALUATE" and msg.stage == Stage.EVALUATE
    assert type(msg.stage) is str


def test_ids_are_unique() -> None:
    b = MessageBuilder().with_msg_type(MessageType.INFO)
    assert len({b.build().id for _ in range(1000)}) == 1000


def test_arguments_are_copied_not_shared() -> None:
    args = {"lr": 0.1}
    b = MessageBuilder().with_msg_type(MessageType.DATA).with_additional_arguments(args)
    m1 = b.with_argument("epochs", 3).build()
    args["lr"] = 99
    m2 = b.build()
    assert m1.additional_arguments == {"lr": 0.1, "epochs": 3}
    assert m2.additional_arguments == {"lr": 0.1, "epochs": 3}
    assert m1.additional_arguments is not m2.additional_arguments
    assert m1.get_additional_arguments() == m1.additional_arguments


def test_build_requires_msg_type() -> None:
    with pytest.raises(InvalidMessage, match="msg_type is required"):
        MessageBuilder().with_user_msg("x").build()


def test_unknown_msg_type_names_the_known_ones() -> None:
    with pytest.raises(InvalidMessage, match="START"):
        MessageBuilder().with_msg_type("NOPE")


def test_additional_arguments_must_be_a_dict() -> None:
    with pytest.raises(InvalidMessage, match="must be a dict"):
        MessageBuilder().with_additional_arguments([1, 2])  # type: ignore[arg-type]


def test_non_string_fields_rejected() -> None:
    with pytest.raises(InvalidMessage):
        MessageBuilder().with_creator(42)  # type: ignore[arg-type]


def test_to_builder_starts_a_new_message() -> None:
    orig = (
        MessageBuilder()
        .with_msg_type(MessageType.START)
        .with_creator("etl")
        .with_correlation_id("c-1")
        .with_argument("k", 1)
        .build()
    )
    copy = orig.to_builder().with_msg_type(MessageType.COMPLETE).with_argument("j", 2).build()
    assert copy.id != orig.id
    assert copy.creator == "etl" and copy.correlation_id == "c-1"
    assert copy.msg_type is MessageType.COMPLETE
    assert copy.additional_arguments == {"k": 1, "j": 2}
    assert orig.additional_arguments == {"k": 1}


def test_message_types_cover_the_pipeline_vocabulary() -> None:
    for name in ("START", "PROGRESS", "COMPLETE", "FAILURE", "DATA", "INFO"):
        assert MessageType(name).value == name
    for name in ("ETL", "TRAIN", "EVALUATE", "DEPLOY", "MONITOR"):
        assert Stage(name).value == name


def test_is_a_frozen_kw_only_struct() -> None:
    assert issubclass(MLOpsMessage, msgspec.Struct)
    assert MLOpsMessage.__struct_config__.frozen
    with pytest.raises(TypeError):
        MLOpsMessage("id", 1.0, MessageType.INFO)  # type: ignore[misc]


# -- immutable all the way down ---------------------------------------------------


def _nested() -> MLOpsMessage:
    return (MessageBuilder().with_msg_type(MessageType.DATA)
            .with_additional_arguments({
                "features": [0.5, 1, 2.5], "tags": ["a", "b"], "cfg": {"lr": 0.1, "layers": [8]},
                "pair": (1, [2]), "ids": {3, 4}, "blob": bytearray(b"xy"), "n": 1,
            }).build())


_IN_PLACE = [
    ("append to a list", lambda a: a["features"].append(3)),
    ("set a list item", lambda a: a["tags"].__setitem__(0, "z")),
    ("extend a list", lambda a: a["tags"].extend(["c"])),
    ("+= a list", lambda a: a["tags"].__iadd__(["c"])),
    ("sort a list", lambda a: a["tags"].sort()),
    ("set in a nested dict", lambda a: a["cfg"].__setitem__("lr", 1.0)),
    ("update a nested dict", lambda a: a["cfg"].update(lr=1.0)),
    ("pop from a nested dict", lambda a: a["cfg"].pop("lr")),
    ("append two levels down", lambda a: a["cfg"]["layers"].append(16)),
    ("append inside a tuple", lambda a: a["pair"][1].append(3)),
]


@pytest.mark.parametrize("change", [c for _, c in _IN_PLACE], ids=[n for n, _ in _IN_PLACE])
def test_nothing_inside_a_built_message_changes_in_place(change: Any) -> None:
    # Built messages are frozen all the way down; a decoded one at the top level only
    # (tests/unit/messages/test_message_evolution.py): deep freezing on decode doubled its cost.
    msg = _nested()
    before = msgspec.json.encode(msg)
    with pytest.raises(TypeError, match=r"immutable.*to_builder"):
        change(msg.additional_arguments)
    assert msgspec.json.encode(msg) == before


def test_frozen_containers_read_and_encode_like_the_originals() -> None:
    args = _nested().additional_arguments
    assert args["features"] == [0.5, 1, 2.5] and isinstance(args["features"], list)
    assert args["cfg"] == {"lr": 0.1, "layers": [8]} and isinstance(args["cfg"], dict)
    assert args["ids"] == frozenset({3, 4}) and args["blob"] == b"xy"
    assert args["pair"] == (1, [2])
    mutable = args["tags"].copy() + list(args["features"])
    mutable.append("ok")  # copies are plain, mutable lists
    assert dict(args["cfg"]) | {"x": 1} == {"lr": 0.1, "layers": [8], "x": 1}
    back = Codec().decode(Codec().encode(_nested())).additional_arguments
    assert back["features"] == [0.5, 1, 2.5] and back["ids"] == [3, 4] and back["blob"] == b"xy"


def test_the_callers_containers_and_the_builder_stay_theirs() -> None:
    layers = [8]
    args = {"cfg": {"layers": layers}}
    b = MessageBuilder().with_msg_type(MessageType.DATA).with_additional_arguments(args)
    first = b.build()
    layers.append(16)  # the caller's own list, changed after build
    args["cfg"]["lr"] = 0.1
    assert first.additional_arguments == {"cfg": {"layers": [8]}}
    second = b.with_argument("more", [1]).build()  # the builder stays mutable
    assert second.additional_arguments["more"] == [1]
    assert first.additional_arguments == {"cfg": {"layers": [8]}}
    assert layers == [8, 16]  # and the caller's list was never frozen


def test_get_additional_arguments_is_a_mutable_deep_copy() -> None:
    msg = _nested()
    copy_ = msg.get_additional_arguments()
    copy_["cfg"]["layers"].append(16)
    copy_["new"] = 1
    assert msg.additional_arguments["cfg"]["layers"] == [8]
    assert "new" not in msg.additional_arguments


def test_no_arguments_is_not_sent_at_all() -> None:
    # An empty default stays off the wire (omit_defaults), as before it became frozen.
    msg = MessageBuilder().with_msg_type(MessageType.INFO).build()
    assert b"additional_arguments" not in Codec().encode(msg)
    assert msg.additional_arguments == {}
    with pytest.raises(TypeError, match="immutable"):
        msg.additional_arguments["x"] = 1
    empty = MessageBuilder().with_msg_type(MessageType.INFO).with_additional_arguments({}).build()
    assert b"additional_arguments" not in Codec().encode(empty)


def test_a_numpy_array_argument_is_a_read_only_view() -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(4.0)
    msg = MessageBuilder().with_msg_type(MessageType.DATA).with_argument("x", arr) \
        .with_argument("batch", [arr]).build()
    for held in (msg.additional_arguments["x"], msg.additional_arguments["batch"][0]):
        with pytest.raises(ValueError, match="read-only"):
            held[0] = 5.0
    arr[0] = 1.0  # the caller's array stays writable (a view: no copy was made)
    back = Codec().decode(Codec().encode(msg)).additional_arguments["x"]
    assert back.tolist() == [1.0, 1.0, 2.0, 3.0] and not back.flags.writeable


# -- MessageType and stages a newer writer knows ------------------------------------

# Written by hand, as a newer producer would: a type and a stage this version lacks.
_NEWER_MSGPACK = (
    b"\x01\x84"
    b"\xa2id\xa1a"
    b"\xaacreated_at\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"
    b"\xa8msg_type\xa7RETRAIN"
    b"\xa5stage\xa9FEATURIZE"
)
_NEWER_JSON = b'\x02{"id":"a","created_at":1.0,"msg_type":"RETRAIN","stage":"FEATURIZE"}'


@pytest.mark.parametrize("payload", [_NEWER_MSGPACK, _NEWER_JSON], ids=["msgpack", "json"])
def test_a_type_from_a_newer_writer_is_readable(payload: bytes) -> None:
    msg = Codec().decode(payload)
    assert msg.msg_type == "RETRAIN" and str(msg.msg_type) == "RETRAIN"
    assert msg.msg_type != MessageType.START and msg.stage == "FEATURIZE"
    assert MessageType("START") is MessageType.START  # known values: still the enum
    with pytest.raises(ValueError):
        MessageType("RETRAIN")
    assert Codec().decode(Codec().encode(msg)).msg_type == "RETRAIN"  # passed on unchanged


async def test_a_type_from_a_newer_writer_is_delivered_not_dead_lettered() -> None:
    from mlops_async import App, Producer
    from mlops_async.backends import Record

    url = f"memory://newer-{new_id()[:8]}"
    app = App("older-reader", url=url, heartbeat=None)
    seen: list[MLOpsMessage] = []

    @app.handler(input="events", dead_letter="events.dlq")
    async def h(msg: MLOpsMessage) -> None:
        seen.append(msg)

    async with app, Producer(url, topic="events") as p:
        assert p.backend is not None
        await p.backend.publish([Record("events", _NEWER_MSGPACK, None),
                                 Record("events", _NEWER_JSON, None)])
        async with asyncio.timeout(10):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
        sub = await p.backend.subscribe(["events.dlq"], group=None, auto_offset_reset="earliest")
        assert await sub.fetch(10, 0.2) == []
        await sub.close()
    assert [(m.msg_type, m.stage) for m in seen] == [("RETRAIN", "FEATURIZE")] * 2


def test_ids_are_32_hex_characters_and_never_repeat_in_a_forked_child() -> None:
    import os
    import warnings

    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork in a threaded process; the
        warnings.simplefilter("ignore", DeprecationWarning)  # child only draws ids and exits
        pid = os.fork()
    if pid == 0:  # the child: its ids go to the parent through the pipe
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read().decode()
    os.waitpid(pid, 0)
    child = {data[i : i + 32] for i in range(0, len(data), 32)}
    mine = {new_id() for _ in range(100)}
    assert len(child) == 100 and not child & mine


def test_the_builder_copies_the_arguments_when_given() -> None:
    tags = ["a"]
    args: dict[str, Any] = {"tags": tags, "n": 1}
    b = MessageBuilder().with_msg_type(MessageType.DATA).with_additional_arguments(args)
    tags.append("b")  # after the call: not part of what the builder was given
    args["n"] = 2
    msg = b.build()
    assert msg.additional_arguments == {"tags": ["a"], "n": 1}
    assert b.with_argument("m", 3).build().additional_arguments == {"tags": ["a"], "n": 1,
                                                                      "m": 3}
    assert b.build().additional_arguments is not b.build().additional_arguments


def test_enum_values_become_their_text_in_every_field() -> None:
    msg = (MessageBuilder().with_msg_type("DATA").with_creator_type(Stage.ETL)
           .with_next_task(Stage.TRAIN).with_stage(Stage.EVALUATE)
           .with_correlation_id("c").build())
    assert (msg.creator_type, msg.next_task, msg.stage) == ("ETL", "TRAIN", "EVALUATE")
    assert {type(v) for v in (msg.creator_type, msg.next_task, msg.stage)} == {str}
