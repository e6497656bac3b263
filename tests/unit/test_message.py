from __future__ import annotations

import time

import msgspec
import pytest

from mlops_async import InvalidMessage, MessageBuilder, MessageType, MLOpsMessage, Stage


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
