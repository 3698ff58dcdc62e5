"""Identifiers and time: the two sources of nondeterminism, kept at the edge."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): millisecond timestamp first, so ids sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def short_id(prefix: str) -> str:
    """A compact random id such as ``t3f9c…`` for tenants and keys."""
    return prefix + os.urandom(8).hex()


def utcnow() -> datetime:
    return datetime.now(UTC)
