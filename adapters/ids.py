"""Identifiers and time: the two sources of nondeterminism, kept at the edge."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

_RANDOM: list[int] = []
# A forked child starts with a copy of this pool: drawing from it, it would hand out the very
# ids its parent hands out next. It draws a pool of its own instead.
os.register_at_fork(after_in_child=_RANDOM.clear)


def _random80() -> int:
    """80 random bits from ``os.urandom``, fetched 512 at a time (one syscall, not one per id)."""
    try:
        return _RANDOM.pop()
    except IndexError:
        block = os.urandom(10 * 512)
        _RANDOM.extend(int.from_bytes(block[i : i + 10], "big") for i in range(0, len(block), 10))
        return _RANDOM.pop()


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): millisecond timestamp first, so ids sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = _random80()
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_hex() -> str:
    """128 random bits as 32 hex digits (a request id), from the same pool as :func:`uuid7`.

    ``uuid.uuid4()`` makes a ``getrandom`` call per id, and that call lets go of the GIL: the
    event loop then waits for the writer and projector threads to hand it back.
    """
    return f"{_random80() & 0xFFFFFFFFFFFFFFFF:016x}{_random80() & 0xFFFFFFFFFFFFFFFF:016x}"


def short_id(prefix: str) -> str:
    """A compact random id such as ``t3f9c…`` for tenants and keys."""
    return prefix + os.urandom(8).hex()


def utcnow() -> datetime:
    return datetime.now(UTC)
