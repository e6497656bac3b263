"""Serialisation of messages: one Encoder/Decoder pair per schema, built once.

Every payload starts with one marker byte that names its format and envelope
version, so the wire format can change without breaking running consumers:

======  =========================================================
0x01    msgpack, envelope v1 (the default)
0x02    JSON, envelope v1
``{``   a bare JSON object from a foreign producer (read, never written)
======  =========================================================

A reader accepts every known marker whatever format it writes, so a topic can
move from JSON to msgpack (or back) while consumers run. The size limit is
checked before any decoding happens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal

import msgspec
from msgspec.structs import force_setattr
from typing_extensions import TypeVar

from .errors import DecodeError, EncodeError, MessageTooLarge
from .message import MLOpsMessage

__all__ = ["DEFAULT_MAX_SIZE", "JSON_V1", "MSGPACK_V1", "Codec", "Format"]

T = TypeVar("T", default=MLOpsMessage)
_DEFAULT_SCHEMA: Any = MLOpsMessage  # typed Any so that Codec() infers T = MLOpsMessage
Format = Literal["msgpack", "json"]

MSGPACK_V1 = 0x01
JSON_V1 = 0x02
_BARE_JSON = ord("{")
DEFAULT_MAX_SIZE = 1024 * 1024
_COPY_BELOW = 64 * 1024


def _describe(schema: Any) -> str:
    return getattr(schema, "__name__", repr(schema))


class Codec(Generic[T]):
    """Encodes messages of ``schema`` to bytes and decodes bytes back into ``schema``.

    ``schema`` is :class:`MLOpsMessage` by default, or any ``msgspec.Struct``
    type. Instances are cheap to share; create one per schema and reuse it.
    """

    __slots__ = (
        "_check",
        "_encode",
        "_encode_into",
        "_full_check",
        "_has_topic",
        "_json_dec",
        "_marker",
        "_mp_dec",
        "format",
        "max_size",
        "schema",
    )

    def __init__(
        self,
        schema: type[T] = _DEFAULT_SCHEMA,
        *,
        format: Format = "msgpack",
        max_size: int = DEFAULT_MAX_SIZE,
        validate: bool | None = False,
    ) -> None:
        """``validate`` checks messages on encode: ``None`` the dtypes of array fields
        (see :func:`.arrays.field_check`; nothing for schemas without them), ``True``
        also every field, by decoding each payload as a consumer will; ``False`` none.
        """
        if format not in ("msgpack", "json"):
            raise ValueError(f"unknown format {format!r}: use 'msgpack' or 'json'")
        if max_size <= 1:
            raise ValueError("max_size must be larger than 1 byte")
        self.schema = schema
        self.format = format
        self.max_size = max_size
        # numpy arrays (see .arrays): msgspec calls these hooks only for types it does
        # not know, so messages without arrays cost nothing; numpy is never imported here.
        from .arrays import dec_hook, ext_hook, field_check, json_enc_hook, msgpack_enc_hook

        self._mp_dec = msgspec.msgpack.Decoder(schema, dec_hook=dec_hook, ext_hook=ext_hook)
        self._json_dec = msgspec.json.Decoder(schema, dec_hook=dec_hook)
        self._has_topic = "topic" in getattr(schema, "__struct_fields__", ())
        if format == "msgpack":
            self._marker = bytes([MSGPACK_V1])
            encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder = msgspec.msgpack.Encoder(
                enc_hook=msgpack_enc_hook)
        else:
            self._marker = bytes([JSON_V1])
            encoder = msgspec.json.Encoder(enc_hook=json_enc_hook)
        self._encode = encoder.encode
        self._encode_into = encoder.encode_into
        self._check = None if validate is False else field_check(schema)
        dec = self._mp_dec.decode if format == "msgpack" else self._json_dec.decode
        self._full_check = dec if validate is True else None

    def encode(self, msg: T, *, where: str = "") -> bytes:
        """Serialise ``msg``; raises :class:`EncodeError` or :class:`MessageTooLarge`."""
        try:
            if self._check is not None:
                self._check(msg)
            data = self._marker + self._encode(msg)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise EncodeError(f"cannot encode {type(msg).__name__}: {exc}") from exc
        if self._full_check is not None:
            try:
                self._full_check(data[1:])
            except (msgspec.ValidationError, TypeError, ValueError) as exc:
                raise EncodeError(f"{type(msg).__name__} would not decode as "
                                  f"{_describe(self.schema)}: {exc}") from exc
        if len(data) > self.max_size:
            raise MessageTooLarge(len(data), self.max_size, where)
        return data

    def fast_encode_path(self) -> tuple[Callable[[Any, bytearray, int], None], bytes]:
        """``(encode_into, marker)``: :meth:`encode`'s hot path, for a caller that inlines it.

        With ``scratch = bytearray(marker)``, owned by the caller alone (never
        shared between threads or across an ``await``), ``encode_into(msg,
        scratch, 1)`` then ``bytes(scratch)`` is the payload when that raises
        nothing and is at most ``max_size`` bytes; otherwise :meth:`encode`
        raises the right error. Inlined, it saves a call and its checks per
        message (``Producer.send``), and writing after the marker in place saves
        the copy that ``marker + payload`` makes (~115 ns for a 430-byte message).
        """
        check, full, encode_into = self._check, self._full_check, self._encode_into
        if check is None and full is None:
            return encode_into, self._marker

        def checked_encode_into(msg: Any, buf: bytearray, offset: int) -> None:
            if check is not None:
                check(msg)
            encode_into(msg, buf, offset)
            if full is not None:
                full(buf[offset:])  # a copy: no view may outlive the call (buf is reused)

        return checked_encode_into, self._marker

    def decode(self, data: bytes | None, *, topic: str | None = None, where: str = "") -> T:
        """Decode ``data`` into the schema; ``topic`` is recorded on the message if it has one.

        This is the decode boundary: whatever the bytes (or a null value), it
        raises only :class:`MessageTooLarge` or :class:`DecodeError`, never a
        msgspec error or anything a schema's ``__post_init__`` raises.
        """
        raw: Any = data  # anything at all may come from a broker: checked below, not here
        try:
            # Hot path first; what it cannot take (None, empty, other markers) goes below.
            size = len(raw)
            if raw[0] == MSGPACK_V1 and size <= self.max_size:
                # Slicing copies the bytes: cheaper than a memoryview below _COPY_BELOW,
                # while large payloads (arrays) are read in place.
                msg = self._mp_dec.decode(raw[1:] if size < _COPY_BELOW else memoryview(raw)[1:])
            else:
                msg = self._decode_other(raw, size, where)
        except (DecodeError, MessageTooLarge):
            raise
        except Exception as exc:  # the boundary: no record content crosses as a foreign error
            if data is None:
                raise DecodeError("null value (a tombstone)", b"", where) from None
            if isinstance(data, bytes | bytearray | memoryview) and len(data) == 0:
                raise DecodeError("empty payload", b"", where) from None
            detail = str(exc) if isinstance(exc, msgspec.MsgspecError) else repr(exc)
            raise DecodeError(
                f"not a valid {_describe(self.schema)}: {detail}", _raw(data), where
            ) from None
        if topic is not None and self._has_topic:
            force_setattr(msg, "topic", topic)  # type: ignore[arg-type]
        return msg

    def fast_path(self) -> tuple[Callable[[Any], T], int, bool]:
        """``(decode, limit, has_topic)``: :meth:`decode`'s hot path, for a caller that
        inlines it (``async for``: ~80 ns a message less than the call).

        A payload ``v`` with ``v[0] == MSGPACK_V1`` and ``len(v) <= limit`` may be
        decoded as ``decode(v[1:])``, then ``topic`` set when ``has_topic``.
        Whatever that raises, and every other payload, goes through
        :meth:`decode`, the decode boundary, which says what is wrong.
        """
        return self._mp_dec.decode, min(self.max_size, _COPY_BELOW - 1), self._has_topic

    def decode_many(self, values: Sequence[Any], topics: Sequence[str]) -> list[T] | None:
        """:meth:`decode` of every value, each recorded with its topic; None if any one
        needs to be decoded on its own.

        The batch path: one pass over well-formed msgpack payloads without a call
        per message. It never raises: a null, another marker, a payload at or over
        ``_COPY_BELOW`` bytes or anything invalid makes it return None, and the
        caller decodes one by one, which says what is wrong with which.
        """
        dec, limit, _ = self.fast_path()
        try:
            msgs = [dec(v[1:]) if v[0] == MSGPACK_V1 and len(v) <= limit else _one_by_one()
                    for v in values]
        except Exception:
            return None
        if self._has_topic:
            for msg, topic in zip(msgs, topics, strict=True):
                force_setattr(msg, "topic", topic)  # type: ignore[arg-type]
        return msgs

    def _decode_other(self, data: Any, size: int, where: str) -> T:
        if size > self.max_size:
            raise MessageTooLarge(size, self.max_size, where)
        marker = data[0]
        if marker == MSGPACK_V1:
            return self._mp_dec.decode(memoryview(data)[1:])
        if marker == JSON_V1:
            return self._json_dec.decode(memoryview(data)[1:])
        if marker == _BARE_JSON:
            return self._json_dec.decode(data)
        raise DecodeError(
            f"unknown format marker {_hex(marker)} (not an mlops_async payload, "
            f"or written by a newer version)",
            _raw(data),
            where,
        )


class _OneByOne(Exception):
    """decode_many(): this payload takes decode()'s path."""


def _one_by_one() -> Any:
    raise _OneByOne


def _hex(marker: object) -> str:
    return f"0x{marker:02x}" if isinstance(marker, int) else repr(marker)


def _raw(data: object) -> bytes:
    """The payload as bytes for a dead letter, whatever a backend handed over."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8", "surrogateescape")
    return repr(data).encode()
