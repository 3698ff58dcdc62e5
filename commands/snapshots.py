"""Snapshots of aggregate states: an explicit, versioned JSON encoding of their dataclasses.

The encoding follows each state dataclass's type hints, so a field added to a state is
encoded without touching this module: dataclasses become lists of their fields in order,
dicts with ``str`` keys JSON objects (insertion order kept), other dicts (the tuple keys of
``client_msg_ids`` and reactions) lists of ``[key, value]`` pairs, tuples lists, frozensets
sorted lists. Nothing is pickled: a snapshot decodes only to the shapes named here.

:func:`schema` names the shape: the :data:`FORMAT` number and a digest of every field's name
and type, recursively. A snapshot is only read back under the schema it was written with,
so a state whose shape changed is folded from the log again rather than misread. Bump
:data:`FORMAT` when an ``evolve`` changes what it computes from the same events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

import orjson

FORMAT = 2  # 2: a sign-in forgets every key's expired console sessions (domain.tenant.evolve)

T = TypeVar("T")
Convert = Callable[[Any], Any]
PLAIN = (str, int, bool, float, type(None))


@dataclass(frozen=True, slots=True)
class _Codec:
    encode: Convert | None  # None: the value is stored as it is (JSON scalars, Any)
    decode: Convert | None
    shape: str


def schema(cls: type[Any]) -> str:
    """The name of ``cls``'s snapshot shape; it changes whenever the shape does."""
    return _schema(cls)


def encode(state: Any) -> bytes:
    """``state`` (a state dataclass) as JSON bytes."""
    codec = _codec(type(state))
    assert codec.encode is not None
    return orjson.dumps(codec.encode(state))


def decode(cls: type[T], data: bytes) -> T:
    """The ``cls`` instance :func:`encode` encoded as ``data``."""
    codec = _codec(cls)
    assert codec.decode is not None
    result: T = codec.decode(orjson.loads(data))
    return result


_SCHEMAS: dict[Any, str] = {}
_CODECS: dict[Any, _Codec] = {}  # built once per type; a race only builds one twice


def _schema(cls: type[Any]) -> str:
    found = _SCHEMAS.get(cls)
    if found is None:
        found = _SCHEMAS[cls] = f"{FORMAT}-{hashlib.sha256(_codec(cls).shape.encode()).hexdigest()[:16]}"
    return found


def _codec(tp: Any) -> _Codec:
    found = _CODECS.get(tp)
    if found is None:
        found = _CODECS[tp] = _build(tp)
    return found


def _build(tp: Any) -> _Codec:
    """How to encode and decode a value of type ``tp``; ``TypeError`` for a type no snapshot holds."""
    if tp is Any or tp in PLAIN:
        return _Codec(None, None, getattr(tp, "__name__", "Any"))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return _Codec(None, None, repr(tp))
    if origin in (Union, types.UnionType):
        return _union(tp, args)
    if origin is list:
        return _sequence(_codec(args[0]), list, "list")
    if origin in (frozenset, set):
        return _set(_codec(args[0]), origin)
    if origin is tuple and Ellipsis not in args:
        return _tuple([_codec(arg) for arg in args])
    if origin is dict:
        return _dict(args[0], _codec(args[1]))
    raise TypeError(f"a snapshot cannot hold {tp!r}")


def _dataclass(cls: type[Any]) -> _Codec:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    if not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__} has fields its constructor does not take")
    names = [f.name for f in fields]
    codecs = [_codec(hints[name]) for name in names]
    fetch = operator.attrgetter(*names) if len(names) > 1 else lambda v: (getattr(v, names[0]),)
    # only the fields that are not stored as they are need a conversion
    encoders = [(n, c.encode) for n, c in enumerate(codecs) if c.encode is not None]
    decoders = [(n, c.decode) for n, c in enumerate(codecs) if c.decode is not None]

    def encode(value: Any) -> list[Any]:
        row = list(fetch(value))
        for n, convert in encoders:
            row[n] = convert(row[n])
        return row

    def decode(row: list[Any]) -> Any:
        if len(row) != len(names):
            raise ValueError(f"{cls.__name__} has {len(names)} fields, the snapshot {len(row)}")
        for n, convert in decoders:
            row[n] = convert(row[n])
        return cls(*row)

    shape = ",".join(f"{n}:{c.shape}" for n, c in zip(names, codecs, strict=True))
    return _Codec(encode, decode, f"{cls.__module__}.{cls.__qualname__}({shape})")


def _union(tp: Any, args: tuple[Any, ...]) -> _Codec:
    codecs = [_codec(arg) for arg in args]
    shape = "|".join(c.shape for c in codecs)
    if all(c.encode is None for c in codecs):
        return _Codec(None, None, shape)
    others = [c for arg, c in zip(args, codecs, strict=True) if arg is not type(None)]
    if len(others) != 1 or len(args) != 2:
        raise TypeError(f"a snapshot cannot hold {tp!r}: only X | None unions of structured types")
    inner = others[0]
    assert inner.encode is not None and inner.decode is not None
    enc, dec = inner.encode, inner.decode
    return _Codec(lambda v: None if v is None else enc(v), lambda v: None if v is None else dec(v), shape)


def _sequence(item: _Codec, kind: type[Any], name: str) -> _Codec:
    shape = f"{name}[{item.shape}]"
    if item.encode is None or item.decode is None:
        return _Codec(list, kind, shape)
    enc, dec = item.encode, item.decode
    return _Codec(lambda v: [enc(x) for x in v], lambda v: kind(dec(x) for x in v), shape)


def _set(item: _Codec, kind: type[Any]) -> _Codec:
    if item.encode is not None:
        raise TypeError("a snapshot holds sets of plain values only")
    return _Codec(sorted, kind, f"{kind.__name__}[{item.shape}]")  # sorted: equal sets encode alike


def _tuple(items: list[_Codec]) -> _Codec:
    shape = f"tuple[{','.join(c.shape for c in items)}]"
    if all(c.encode is None for c in items):
        return _Codec(list, tuple, shape)
    encoders = [c.encode or (lambda x: x) for c in items]
    decoders = [c.decode or (lambda x: x) for c in items]
    return _Codec(
        lambda v: [e(x) for e, x in zip(encoders, v, strict=True)],
        lambda v: tuple(d(x) for d, x in zip(decoders, v, strict=True)),
        shape,
    )


def _dict(key_type: Any, value: _Codec) -> _Codec:
    key = _codec(key_type)
    shape = f"dict[{key.shape},{value.shape}]"
    if key_type is str:  # a JSON object keeps the keys and their order
        if value.encode is None or value.decode is None:
            return _Codec(None, None, shape)
        enc, dec = value.encode, value.decode
        return _Codec(lambda v: {k: enc(x) for k, x in v.items()}, lambda v: {k: dec(x) for k, x in v.items()}, shape)
    if key_type is Any or (key.encode is not None and typing.get_origin(key_type) is not tuple):
        raise TypeError(f"a snapshot cannot hold dicts keyed by {key_type!r}")
    key_enc, key_dec = key.encode or (lambda x: x), key.decode or (lambda x: x)
    val_enc, val_dec = value.encode or (lambda x: x), value.decode or (lambda x: x)
    return _Codec(
        lambda v: [[key_enc(k), val_enc(x)] for k, x in v.items()],
        lambda v: {key_dec(k): val_dec(x) for k, x in v},
        shape,
    )
