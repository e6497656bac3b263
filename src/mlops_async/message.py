"""The one message structure every stage of a pipeline exchanges.

``MLOpsMessage`` is a frozen msgspec Struct: cheap to build, impossible to
mutate after ``build()``, and decoded straight from the wire without an
intermediate dict. Every field added later must have a default, so programs
built against an older version keep reading newer messages and vice versa.
"""

from __future__ import annotations

import enum
import os
import time
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
import msgspec.structs

from .errors import InvalidMessage

__all__ = [
    "FrozenArgs",
    "FrozenList",
    "MLOpsMessage",
    "MessageBuilder",
    "MessageType",
    "Stage",
    "new_id",
    "unknown_type",
]


class MessageType(enum.StrEnum):
    """What a message announces. New members may be added; old readers keep working."""

    START = "START"
    PROGRESS = "PROGRESS"
    COMPLETE = "COMPLETE"
    FAILURE = "FAILURE"
    DATA = "DATA"
    INFO = "INFO"
    STOP = "STOP"


class Stage(enum.StrEnum):
    """Usual phases of an ML pipeline; any plain string is accepted as well."""

    ETL = "ETL"
    TRAIN = "TRAIN"
    EVALUATE = "EVALUATE"
    DEPLOY = "DEPLOY"
    MONITOR = "MONITOR"


_UNKNOWN: dict[str, enum.StrEnum] = {}


def unknown_type(value: str) -> enum.StrEnum:
    """A :class:`MessageType` value this version does not know yet (a newer writer's).

    Such a message is delivered, not dead-lettered: its type is an enum member of
    its own (``.value`` is the string and it equals it; ``.name`` is UNKNOWN), which
    encodes back unchanged. One member per distinct value (a handful in practice).
    """
    member = _UNKNOWN.get(value)
    if member is None:
        if len(_UNKNOWN) >= 1024:  # bounded: a hostile stream cannot grow it forever
            _UNKNOWN.clear()
        make: Any = enum.StrEnum  # the functional API, with a name known only now
        # A fixed member name: the value may be any string ("", "mro", "_x_"...).
        member = _UNKNOWN[value] = make("UnknownMessageType", [("UNKNOWN", value)]).UNKNOWN
    return member


_TYPES: dict[str, MessageType] = {m.value: m for m in MessageType}


_IMMUTABLE = "a built MLOpsMessage is immutable: derive a changed copy with msg.to_builder()"


class FrozenArgs(dict[str, Any]):
    """``additional_arguments`` of a built message: read it like a dict; changing it raises.

    A message may already sit in a send buffer when the code that built it runs
    on, so changing it in place must fail rather than alter what is sent. The
    same holds for what it contains: dicts in it are FrozenArgs too, lists are
    :class:`FrozenList`, sets frozensets, bytearrays bytes and numpy arrays
    read-only views (copies of what the builder was given, so the caller's own
    containers stay as they were). ``dict(args)`` or ``args.copy()`` gives a
    mutable copy; ``msg.get_additional_arguments()`` a deep one.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_IMMUTABLE)

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/copy without calling __setitem__
        return (FrozenArgs, (dict(self),))


class FrozenList(list[Any]):
    """A list inside a built message's arguments: reads like a list; changing it raises.

    Still a ``list`` (``==`` a list, encodes as one); ``list(x)`` gives a mutable copy.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_IMMUTABLE)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/copy without calling append
        return (FrozenList, (list(self),))


# What needs no freezing: immutable values msgspec decodes (and their common kin).
_ATOMS = frozenset({str, int, float, bool, type(None), bytes, FrozenArgs, FrozenList, frozenset})
_NO_ARGS = FrozenArgs()  # the default: shared, and omitted on the wire (omit_defaults)


_NUMBERS = (float, int)
_put = dict.__setitem__


def _frozen_args(args: dict[str, Any]) -> FrozenArgs:
    """A read-only copy of ``args``, read-only all the way down."""
    if not args:
        return _NO_ARGS
    for value in args.values():  # the usual arguments are all scalars: one copy, no more
        if value.__class__ not in _ATOMS:
            break
    else:
        return FrozenArgs(args)
    out = FrozenArgs(args)
    for key, value in args.items():
        cls = value.__class__
        if cls in _ATOMS:
            continue
        if cls is list and value and value[0].__class__ in _NUMBERS and _only_numbers(value):
            _put(out, key, FrozenList(value))  # the usual case, without a call per item
        else:
            _put(out, key, _frozen(value))
    return out


def _only_numbers(items: list[Any]) -> bool:
    # The usual long list is a feature vector: summing it runs at C speed and gives
    # a float only if every item is an int or a float; a container, string or None
    # raises, an array or a complex gives something else (then each item is looked at).
    try:
        return sum(items, 0.0).__class__ is float
    except Exception:
        return False


def _frozen(value: Any) -> Any:
    """``value`` if it cannot change, else a copy (or view) of it that cannot."""
    cls = value.__class__
    if cls in _ATOMS:
        return value
    if isinstance(value, dict):
        return _frozen_args(value)
    if isinstance(value, list):
        out = FrozenList(value)
        if value and not (value[0].__class__ in _NUMBERS and _only_numbers(value)):
            for i, item in enumerate(value):
                if item.__class__ not in _ATOMS:
                    list.__setitem__(out, i, _frozen(item))
        return out
    if cls is tuple:
        return tuple([_frozen(item) for item in value])
    if isinstance(value, set):
        return frozenset(value)
    if cls is bytearray:
        return bytes(value)
    flags = getattr(value, "flags", None)
    if flags is not None and getattr(flags, "writeable", False) and hasattr(value, "view"):
        view = value.view()  # numpy: a read-only view, no copy (received arrays are already)
        view.flags.writeable = False
        return view
    return value


def _thawed(value: Any) -> Any:
    """A mutable deep copy of frozen containers (for code that edits what it reads)."""
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thawed(v) for v in value]
    if value.__class__ is tuple:
        return tuple([_thawed(v) for v in value])
    return value


if TYPE_CHECKING:
    _MessageTypeField = MessageType
    _ArgsField = dict[str, Any]
else:
    # msg_type is decoded as any string (MessageType will grow, and old readers must keep
    # reading) and mapped to the enum on access; a nil additional_arguments (Go's unset
    # map) is read as no arguments, like nil for every other optional field.
    _MessageTypeField = str
    _ArgsField = dict[str, Any] | None


_ID_BATCH = 256
_ids: list[str] = []  # unused ids from one os.urandom() call; list.pop() hands each out once


def new_id() -> str:
    """A random 128-bit id as 32 hex characters (uuid4 strength, without its cost).

    The bytes come from ``os.urandom``, drawn for 256 ids at a time: one system
    call per id cost more than building the rest of a message.
    """
    try:
        return _ids.pop()  # atomic: two threads never get the same id
    except IndexError:
        return _refill_ids()


def _refill_ids() -> str:
    raw = os.urandom(16 * _ID_BATCH).hex()
    _ids.extend([raw[i : i + 32] for i in range(32, len(raw), 32)])
    return raw[:32]


# A forked child must not hand out the ids its parent holds.
os.register_at_fork(after_in_child=_ids.clear)


def _text(value: str | enum.Enum | None) -> str | None:
    """A field's text: ``value`` itself, or an enum member's value (callers test ``str`` first)."""
    if isinstance(value, enum.Enum):
        text = value._value_  # not .value: that property costs a Python call
        return text if text.__class__ is str else str(text)
    if value is None or isinstance(value, str):
        return value
    raise InvalidMessage(f"expected a string, got {type(value).__name__}")


class MLOpsMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """An immutable pipeline message.

    Assigning to a field raises ``AttributeError``; ``additional_arguments`` reads
    as a :class:`FrozenArgs`, read-only all the way down when built by
    :class:`MessageBuilder`, at the top level when decoded or constructed
    directly. Decoding costs what a plain frozen Struct costs: a decoded
    arguments dict is copied into FrozenArgs, and a ``msg_type`` string mapped
    to :class:`MessageType`, when first read (see ``_read_args``). Like any
    msgspec Struct, a message constructed directly holds the dict it was given
    (until that first read), so give it one you will not change afterwards; the
    builder takes its own copy.

    Not tracked by the cyclic garbage collector (``gc=False``): a frozen message
    that owns a copy of its arguments cannot be part of a reference cycle, and
    a consumer holding a batch of decoded messages would otherwise pay for
    collections that scan them.

    ``topic`` is filled in by the consumer with the topic the message came
    from; it is not sent over the wire by the producer.
    """

    id: str
    created_at: float
    msg_type: _MessageTypeField
    creator_type: str | None = None
    creator: str | None = None
    user_message: str | None = None
    next_task: str | None = None
    stage: str | None = None
    topic: str | None = None
    correlation_id: str | None = None
    additional_arguments: _ArgsField = _NO_ARGS

    # Getters for code written against the original orchestration library.
    def get_id(self) -> str:
        return self.id

    def get_created_at(self) -> float:
        return self.created_at

    def get_msg_type(self) -> MessageType:
        return self.msg_type

    def get_creator_type(self) -> str | None:
        return self.creator_type

    def get_creator(self) -> str | None:
        return self.creator

    def get_user_message(self) -> str | None:
        return self.user_message

    def get_next_task(self) -> str | None:
        return self.next_task

    def get_stage(self) -> str | None:
        return self.stage

    def get_topic(self) -> str | None:
        return self.topic

    def get_correlation_id(self) -> str | None:
        return self.correlation_id

    def get_additional_arguments(self) -> dict[str, Any]:
        """A mutable deep copy of ``additional_arguments`` (the message's own cannot change)."""
        return {k: _thawed(v) for k, v in self.additional_arguments.items()}

    def to_builder(self) -> MessageBuilder:
        """A builder preloaded with this message's fields; ``build()`` gives a new id and time."""
        b = MessageBuilder()
        b._msg_type = self.msg_type
        b._creator_type = self.creator_type
        b._creator = self.creator
        b._user_message = self.user_message
        b._next_task = self.next_task
        b._stage = self.stage
        b._correlation_id = self.correlation_id
        # A plain copy: build() freezes it all the way down (a decoded message's
        # arguments are read-only at the top level only).
        b._args = dict(self.additional_arguments)
        return b


# msgspec reads and writes fields in C (decode, encode, ==, repr, replace), straight
# from the slots. Python attribute access to these two goes through a property that
# normalises the stored value once and writes the result back: the slot is the
# property's storage. Assignment still raises, as for every field of a frozen Struct
# (its __setattr__ refuses before any descriptor is asked). Each slot stays reachable
# under a private name too, where a read is a plain slot load.
setattr(MLOpsMessage, "_args_slot", MLOpsMessage.__dict__["additional_arguments"])  # noqa: B010
setattr(MLOpsMessage, "_type_slot", MLOpsMessage.__dict__["msg_type"])  # noqa: B010
_store = msgspec.structs.force_setattr


def _read_args(msg: Any) -> FrozenArgs:
    args = msg._args_slot
    if args.__class__ is FrozenArgs:
        return args
    frozen = FrozenArgs(args) if args else _NO_ARGS  # a decoded dict, or nil
    _store(msg, "_args_slot", frozen)
    return frozen


def _read_type(msg: Any) -> Any:
    t = msg._type_slot
    if t.__class__ is str:
        t = _TYPES.get(t) or unknown_type(t)
        _store(msg, "_type_slot", t)
    return t


for _name, _read in (("additional_arguments", _read_args), ("msg_type", _read_type)):
    setattr(MLOpsMessage, _name, property(_read, MLOpsMessage.__dict__[_name].__set__))
del _name, _read


class MessageBuilder:
    """Fluent builder: every ``with_*`` call returns the builder; later calls overwrite.

    ``with_additional_arguments`` takes a read-only copy of what it is given, all
    the way down, at once: the caller's containers stay theirs, and ``build()``
    hands that copy to the message without copying again.
    """

    # Unset fields read these class defaults: a new builder costs no __init__ call.
    _msg_type: MessageType | None = None
    _creator_type: str | None = None
    _creator: str | None = None
    _user_message: str | None = None
    _next_task: str | None = None
    _stage: str | None = None
    _correlation_id: str | None = None
    _args: dict[str, Any] = _NO_ARGS  # a FrozenArgs is final; a plain dict is frozen by build()

    def with_msg_type(self, msg_type: MessageType | str) -> MessageBuilder:
        try:
            self._msg_type = _TYPES[msg_type]  # a member or its value
        except (KeyError, TypeError):
            known = ", ".join(m.value for m in MessageType)
            raise InvalidMessage(f"unknown msg_type {msg_type!r}; known: {known}") from None
        return self

    def with_creator_type(self, creator_type: str | enum.Enum) -> MessageBuilder:
        self._creator_type = creator_type if creator_type.__class__ is str else _text(creator_type)
        return self

    def with_creator(self, creator: str) -> MessageBuilder:
        self._creator = creator if creator.__class__ is str else _text(creator)
        return self

    def with_user_msg(self, user_message: str) -> MessageBuilder:
        self._user_message = user_message if user_message.__class__ is str else _text(user_message)
        return self

    with_user_message = with_user_msg

    def with_next_task(self, next_task: str | enum.Enum) -> MessageBuilder:
        self._next_task = next_task if next_task.__class__ is str else _text(next_task)
        return self

    def with_stage(self, stage: str | enum.Enum) -> MessageBuilder:
        self._stage = stage if stage.__class__ is str else _text(stage)
        return self

    def with_correlation_id(self, correlation_id: str) -> MessageBuilder:
        self._correlation_id = (
            correlation_id if correlation_id.__class__ is str else _text(correlation_id))
        return self

    def with_additional_arguments(self, arguments: dict[str, Any]) -> MessageBuilder:
        if not isinstance(arguments, dict):
            raise InvalidMessage(
                f"additional_arguments must be a dict, got {type(arguments).__name__}"
            )
        self._args = _frozen_args(arguments)
        return self

    def with_argument(self, key: str, value: Any) -> MessageBuilder:
        args = self._args
        if args.__class__ is FrozenArgs:  # thawed: the builder stays mutable
            args = self._args = dict(args)
        args[key] = value
        return self

    def build(self) -> MLOpsMessage:
        """Return the frozen message; raises :class:`InvalidMessage` if ``msg_type`` is unset."""
        if self._msg_type is None:
            raise InvalidMessage("msg_type is required: call with_msg_type(MessageType.X)")
        args = self._args
        if args.__class__ is not FrozenArgs:
            # Changed by with_argument (or from to_builder): the message gets its own copy,
            # frozen all the way down, and the builder stays free to change.
            args = _frozen_args(args)
        # Every field by name: msgspec matches these without the dict a ** call builds.
        return MLOpsMessage(
            id=new_id(), created_at=_now(), msg_type=self._msg_type,
            creator_type=self._creator_type, creator=self._creator,
            user_message=self._user_message, next_task=self._next_task, stage=self._stage,
            correlation_id=self._correlation_id, additional_arguments=args)


_now = time.time
