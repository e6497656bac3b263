"""NumPy arrays as payloads (the ``numpy`` extra): a msgpack extension and a JSON fallback.

A ``numpy.ndarray`` of any numeric or bool dtype, any shape, C- or
Fortran-ordered, can be a field of a ``msgspec.Struct`` schema (annotated
``np.ndarray`` or ``npt.NDArray[np.float32]``) or a value in
``MLOpsMessage.additional_arguments``. NumPy scalars (``np.float64(0.93)``)
are sent as the plain Python number they hold.

msgpack (the default format): extension type :data:`EXT_NDARRAY` (1), whose
data is, little-endian::

    u8 version (1) | u8 flags (bit 0: Fortran order) | u8 ndim | u8 len(dtype)
    dtype           the array-protocol type string, ASCII: "<f4", "|u1", ">i8", "<c16"
    ndim x u64      the shape
    raw bytes       the elements, C order (or Fortran order when flag bit 0 is set)

A received array is a read-only view over the received bytes (``np.frombuffer``,
no copy, for payloads of 64 KiB and more; the codec copies smaller ones once);
``arr.copy()`` gives a writable one. A reader without numpy gets a
``msgspec.msgpack.Ext`` in its place, so the rest of the message stays readable.

JSON (``format="json"``): the tagged object
``{"__ndarray__": "<base64 of the C-order bytes>", "dtype": "<f4", "shape": [768]}``,
which any language can read. A field annotated as an array decodes back into
one; inside ``additional_arguments`` (typed ``Any``) the object stays a dict:
:func:`from_json` turns such values back into arrays.

Nothing here imports numpy: the hooks look for it in ``sys.modules`` (an
array cannot exist unless numpy was imported), and the decoder imports it
only when an array arrives.
"""

from __future__ import annotations

import base64
import importlib
import math
import struct
import sys
from typing import Any, get_args, get_origin

import msgspec

__all__ = [
    "EXT_NDARRAY",
    "JSON_TAG",
    "dec_hook",
    "ext_hook",
    "field_check",
    "from_json",
    "json_enc_hook",
    "msgpack_enc_hook",
    "schema_hook",
    "to_json",
]

EXT_NDARRAY = 1
JSON_TAG = "__ndarray__"
_VERSION = 1
_FORTRAN = 0x01
_HEAD = struct.Struct("<BBBB")  # version, flags, ndim, len(dtype string)
_KINDS = "biufc"  # bool, signed, unsigned, float, complex: fixed-size plain numbers

# Headers by array type, both ways: a stream carries few distinct (dtype, shape)
# pairs, and building or parsing a header costs more than the copy of a small array.
_Spec = tuple[Any, tuple[int, ...], str, int]  # dtype, shape, order, bytes of elements
_ENC_HEADS: dict[tuple[Any, tuple[int, ...], int], bytes] = {}
_DEC_HEADS: dict[bytes, _Spec] = {}
_CACHE_MAX = 1024


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:  # bounded: a stream of ever-new shapes starts afresh
        cache.clear()
    cache[key] = value


def _numpy() -> Any:
    """numpy if it was imported, else None: no array can exist without it."""
    return sys.modules.get("numpy")


def _unsupported(obj: object) -> TypeError:
    # The message msgspec gives for types it cannot encode, so errors read the same.
    return TypeError(f"Encoding objects of type {type(obj).__qualname__} is unsupported")


def _check_dtype(dtype: Any) -> None:
    if dtype.kind not in _KINDS or dtype.fields is not None:
        raise TypeError(
            f"cannot send an array of dtype {dtype}: only bool and numeric dtypes "
            f"(kinds {_KINDS!r}) travel as arrays"
        )


# -- msgpack -------------------------------------------------------------------------


def _head(dtype: Any, shape: tuple[int, ...], flags: int) -> bytes:
    _check_dtype(dtype)
    if len(shape) > 255:  # numpy allows 64 today; the header byte bounds it anyway
        raise TypeError(f"cannot send an array of {len(shape)} dimensions")
    typestr: bytes = dtype.str.encode("ascii")
    return (_HEAD.pack(_VERSION, flags, len(shape), len(typestr)) + typestr
            + struct.pack(f"<{len(shape)}Q", *shape))


def _pack(np: Any, arr: Any) -> bytes:
    if arr.flags.c_contiguous:
        flags, flat = 0, arr
    elif arr.flags.f_contiguous:
        flags, flat = _FORTRAN, arr.T  # the transpose of an F-ordered array is C-ordered
    else:  # a strided view: the one case that needs a copy before sending
        flags, flat = 0, np.ascontiguousarray(arr)
    key = (arr.dtype, arr.shape, flags)
    head = _ENC_HEADS.get(key)
    if head is None:
        head = _head(arr.dtype, arr.shape, flags)
        _remember(_ENC_HEADS, key, head)
    # One copy: header and elements joined into the extension's bytes (the buffer
    # protocol hands over a C-contiguous array's memory as it is).
    return b"".join((head, flat))


def msgpack_enc_hook(obj: Any) -> Any:
    """Encoder hook (msgpack): arrays become :data:`EXT_NDARRAY` extensions.

    msgspec calls it only for objects it cannot encode itself, so messages
    without arrays never reach it. Raises ``TypeError`` for anything else.
    """
    np = _numpy()
    if np is not None:
        if isinstance(obj, np.ndarray):
            return msgspec.msgpack.Ext(EXT_NDARRAY, _pack(np, obj))
        if isinstance(obj, np.generic):
            return obj.item()
    raise _unsupported(obj)


def _parse_head(np: Any, data: memoryview, ndim: int, dlen: int, flags: int) -> _Spec:
    dtype = np.dtype(bytes(data[_HEAD.size:_HEAD.size + dlen]).decode("ascii"))
    if dtype.kind not in _KINDS or dtype.fields is not None:
        raise ValueError(f"ndarray extension names dtype {dtype}, which is not numeric")
    shape = struct.unpack_from(f"<{ndim}Q", data, _HEAD.size + dlen)
    return dtype, shape, "F" if flags & _FORTRAN else "C", math.prod(shape) * dtype.itemsize


def _unpack(np: Any, data: memoryview) -> Any:
    size = len(data)
    if size < _HEAD.size:
        raise ValueError(f"ndarray extension of {size} bytes is shorter than its header")
    version, flags, ndim, dlen = _HEAD.unpack_from(data)
    if version != _VERSION:
        raise ValueError(
            f"ndarray extension version {version} is unknown (written by a newer mlops_async)"
        )
    offset = _HEAD.size + dlen + 8 * ndim
    if size < offset:
        raise ValueError("ndarray extension is shorter than its header says")
    key = data[:offset].tobytes()
    spec = _DEC_HEADS.get(key)
    if spec is None:
        spec = _parse_head(np, data, ndim, dlen, flags)
        _remember(_DEC_HEADS, key, spec)
    dtype, shape, order, nbytes = spec
    if nbytes != size - offset:
        raise ValueError(
            f"ndarray extension holds {size - offset} bytes of elements; shape {shape} "
            f"of {dtype} needs {nbytes}"
        )
    # No copy: the array reads the received bytes in place (and keeps them alive).
    # order= only when needed: parsing the keyword costs about as much as the call itself.
    if order == "C":
        arr = np.ndarray(shape, dtype, data, offset)
    else:
        arr = np.ndarray(shape, dtype, data, offset, order=order)
    if not data.readonly:  # bytes are read-only already; a bytearray from a backend is not
        arr.flags.writeable = False
    return arr


def ext_hook(code: int, data: memoryview) -> Any:
    """Decoder hook (msgpack): :data:`EXT_NDARRAY` -> a read-only ``numpy.ndarray``.

    Other extension codes, and arrays received where numpy is not installed,
    come back as ``msgspec.msgpack.Ext``. Raises ``ValueError`` for a
    malformed array extension (the codec turns it into a ``DecodeError``).
    """
    if code != EXT_NDARRAY:
        return msgspec.msgpack.Ext(code, bytes(data))
    np = _numpy()
    if np is None:
        try:  # the first array to arrive imports numpy, once
            np = importlib.import_module("numpy")
        except ImportError:  # keep the message readable: the array stays opaque
            return msgspec.msgpack.Ext(code, bytes(data))
    return _unpack(np, data)


# -- JSON ----------------------------------------------------------------------------


def to_json(arr: Any) -> dict[str, Any]:
    """The JSON fallback of ``arr``: ``{"__ndarray__": base64, "dtype": ..., "shape": [...]}``.

    The elements are in C order whatever the layout of ``arr``. Raises
    ``TypeError`` for a dtype that is not bool or numeric.
    """
    np = _numpy()
    assert np is not None  # an array exists, so numpy is imported
    _check_dtype(arr.dtype)
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return {
        JSON_TAG: base64.b64encode(flat.data).decode("ascii"),
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
    }


def json_enc_hook(obj: Any) -> Any:
    """Encoder hook (JSON): arrays become the tagged object of :func:`to_json`.

    Raises ``TypeError`` for objects that are neither arrays nor numpy scalars.
    """
    np = _numpy()
    if np is not None:
        if isinstance(obj, np.ndarray):
            return to_json(obj)
        if isinstance(obj, np.generic):
            return obj.item()
    raise _unsupported(obj)


def _from_tagged(np: Any, obj: dict[str, Any]) -> Any:
    try:
        raw = base64.b64decode(obj[JSON_TAG], validate=True)
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(n) for n in obj["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an encoded array ({JSON_TAG!r}, 'dtype', 'shape'): {exc}") from None
    if dtype.kind not in _KINDS or dtype.fields is not None:
        raise ValueError(f"encoded array names dtype {dtype}, which is not numeric")
    count = math.prod(shape)
    if any(n < 0 for n in shape) or count * dtype.itemsize != len(raw):
        raise ValueError(f"encoded array holds {len(raw)} bytes; shape {shape} of {dtype} "
                         f"needs {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def from_json(value: Any) -> Any:
    """``value`` with every tagged array object in it (nested in dicts and lists) decoded.

    For arrays sent in JSON inside untyped places such as
    ``MLOpsMessage.additional_arguments``. Raises ``ValueError`` for a tagged
    object that is not a valid array; needs numpy (``ImportError`` otherwise).
    """
    if isinstance(value, dict):
        if JSON_TAG in value:
            return _from_tagged(importlib.import_module("numpy"), value)
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


# -- typed fields ----------------------------------------------------------------------


def dec_hook(tp: Any, obj: Any) -> Any:
    """Decoder hook: builds the value of a field whose type msgspec does not know.

    An array field (``np.ndarray``, ``npt.NDArray[np.float32]``) takes the
    array the msgpack extension gave, or the JSON tagged object; a dtype named
    in the annotation must match. Any other custom type is accepted when the
    value already is one (as msgspec does without a hook). Raises
    ``TypeError``/``ValueError``, which msgspec reports as a ``ValidationError``.
    """
    origin = get_origin(tp) or tp
    np = _numpy()
    if np is not None and isinstance(origin, type) and issubclass(origin, np.ndarray):
        if isinstance(obj, dict):
            obj = _from_tagged(np, obj)
        if not isinstance(obj, np.ndarray):
            raise TypeError(f"Expected an array, got `{type(obj).__name__}`")
        _check_annotated_dtype(np, tp, obj)
        return obj
    if isinstance(origin, type) and isinstance(obj, origin):
        return obj
    raise TypeError(f"Expected `{getattr(origin, '__name__', origin)}`, "
                    f"got `{type(obj).__name__}`")


def _check_annotated_dtype(np: Any, tp: Any, arr: Any) -> None:
    """``npt.NDArray[np.float32]`` is ``ndarray[shape, dtype[float32]]``: check the scalar type."""
    args = get_args(tp)
    if len(args) != 2:
        return
    scalar = get_args(args[1])
    if (len(scalar) == 1 and isinstance(scalar[0], type) and issubclass(scalar[0], np.generic)
            and scalar[0] is not np.generic and not issubclass(arr.dtype.type, scalar[0])):
        raise TypeError(f"Expected an array of {scalar[0].__name__}, got one of {arr.dtype}")


def _array_scalar(np: Any, tp: Any) -> Any:
    """The scalar type an array type names (``X | None`` too), e.g. ``np.float32``; else None."""
    while hasattr(tp, "__value__"):  # numpy >= 2.5 on 3.12 spells NDArray as a type alias
        tp = tp.__value__
    args = get_args(tp)
    if args and type(None) in args:  # Optional: the array type inside it
        inner = [a for a in args if a is not type(None)]
        return _array_scalar(np, inner[0]) if len(inner) == 1 else None
    origin = get_origin(tp) or tp
    if not (isinstance(origin, type) and issubclass(origin, np.ndarray)) or len(args) != 2:
        return None
    scalar = get_args(args[1])
    if (len(scalar) == 1 and isinstance(scalar[0], type) and issubclass(scalar[0], np.generic)
            and scalar[0] is not np.generic):
        return scalar[0]
    return None


def field_check(schema: Any) -> Any:
    """A function that raises ``TypeError`` when a message of ``schema`` holds an array
    of another dtype than its field declares (``npt.NDArray[np.float32]``), or
    None when ``schema`` declares no such field.

    msgspec encodes whatever array a field holds; the consumer's decoder checks
    the dtype (:func:`dec_hook`): this lets a producer refuse it at send instead.
    """
    np = _numpy()
    if np is None or not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        return None
    fields = [(f.name, t) for f in msgspec.structs.fields(schema)
              if (t := _array_scalar(np, f.type)) is not None]
    if not fields:
        return None
    ndarray = np.ndarray

    def check(msg: Any) -> None:
        for name, scalar in fields:
            value = getattr(msg, name, None)
            if value is None:
                continue
            if value.__class__ is not ndarray and not isinstance(value, ndarray):
                raise TypeError(f"field {name!r}: expected an array, got "
                                f"{type(value).__name__}")
            kind = value.dtype.type
            if kind is not scalar and not issubclass(kind, scalar):
                raise TypeError(f"field {name!r}: expected an array of {scalar.__name__}, got "
                                f"one of {value.dtype}")

    return check


def schema_hook(tp: Any) -> dict[str, Any]:
    """JSON Schema of an array field: the JSON fallback object (for AsyncAPI documents).

    Raises ``NotImplementedError`` for any type that is not ``numpy.ndarray``.
    """
    np = _numpy()
    origin = get_origin(tp) or tp
    # numpy >= 2.5 on Python >= 3.12 spells NDArray as a `type` alias: look through it.
    while hasattr(origin, "__value__"):
        origin = get_origin(origin.__value__) or origin.__value__
    if np is None or not (isinstance(origin, type) and issubclass(origin, np.ndarray)):
        raise NotImplementedError(f"no JSON schema for {tp!r}")
    return {
        "type": "object",
        "title": "ndarray",
        "description": (
            "A numpy array. msgpack: extension type 1 (version, flags, ndim, dtype, "
            "shape, raw bytes). JSON: this object, the elements in C order."
        ),
        "properties": {
            JSON_TAG: {"type": "string", "contentEncoding": "base64"},
            "dtype": {"type": "string", "examples": ["<f4", "<i8", "|b1"]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
        "required": [JSON_TAG, "dtype", "shape"],
    }
