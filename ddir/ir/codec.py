"""msgpack codec for values, term trees and the IR (no pickle anywhere).

* Int -> msgpack int; Tuple -> array (decoded back to ``tuple``);
  List -> ext 1; Variant -> ext 2 (payload: ``[tag, value]``); an int beyond
  64 bits (only a diff on its way to an overflow report) -> ext 4, decimal;
  Float -> ext 5, its 8 bytes big-endian (a plain msgpack float decodes as a
  plain ``float``, which is not a value); String -> msgpack str (UTF-8);
* a dataclass node (IR, term, projection) -> ext 3 with ``[class name,
  field values...]``, decoded through a registry of known classes only.

Equal programs encode to equal bytes: dataclass fields are written in
declaration order and the IR holds no dicts or sets. Equal values encode to
equal bytes in every process (a Float's NaN is one NaN per sign), which the
key hash (``engine.exchange.shard_of``) relies on.
"""

from __future__ import annotations

import dataclasses
import struct

import msgpack

from . import nodes as N
from ..lang import ast as A
from ..terms import ast as T
from ..values import Float, List, Variant

_LIST, _VARIANT, _NODE, _BIG_INT, _FLOAT = 1, 2, 3, 4, 5
_DOUBLE = struct.Struct(">d")

_CLASSES = {}
for _module in (N, T):
    for _name in dir(_module):
        _obj = getattr(_module, _name)
        if isinstance(_obj, type) and dataclasses.is_dataclass(_obj):
            _CLASSES[_obj.__name__] = _obj
_CLASSES["Proj"] = A.Proj
_CLASSES["Splice"] = A.Splice
_FIELDS = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in _CLASSES.items()}


def _default(obj):
    t = type(obj)
    if t is tuple:  # strict_types sends tuples here, so that List/Variant stay distinct
        return list(obj)
    if t is int:
        # Beyond msgpack's 64 bits. Values are always i64, but a diff can grow
        # past it on its way to the arrangement that reports the overflow
        # (SPEC A1), and may cross workers before it gets there.
        return msgpack.ExtType(_BIG_INT, str(obj).encode())
    if t is Float:
        return msgpack.ExtType(_FLOAT, _DOUBLE.pack(obj))
    if t is List:
        return msgpack.ExtType(_LIST, packb(tuple(obj)))
    if t is Variant:
        return msgpack.ExtType(_VARIANT, packb((obj[0], obj[1])))
    name = t.__name__
    if _CLASSES.get(name) is t:
        return msgpack.ExtType(_NODE, packb((name,) + tuple(getattr(obj, f) for f in _FIELDS[name])))
    raise TypeError(f"cannot encode {t.__name__} for another process")


def _ext_hook(code: int, data: bytes):
    if code == _LIST:
        return List(unpackb(data))
    if code == _VARIANT:
        tag, payload = unpackb(data)
        return Variant(tag, payload)
    if code == _FLOAT:
        return Float(_DOUBLE.unpack(data)[0])
    if code == _BIG_INT:
        return int(data)
    if code == _NODE:
        name, *values = unpackb(data)
        cls = _CLASSES.get(name)
        if cls is None:
            raise ValueError(f"unknown IR class {name!r} in message")
        return cls(**dict(zip(_FIELDS[name], values)))
    return msgpack.ExtType(code, data)


# The IR's encoded form: bumped whenever a node's fields change, so that a
# checkpoint written by another version is recognised rather than misread.
IR_VERSION = 1


def packb(obj) -> bytes:
    """Encode values / IR / plain containers (tuples and lists become arrays)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=True)


def unpackb(data: bytes):
    """Decode; arrays come back as tuples (the Tuple value type)."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, use_list=False, raw=False,
                           strict_map_key=False)
