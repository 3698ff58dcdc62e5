"""Typing signals, throttled as the server throttles them (one per user and channel per window)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Throttle:
    """``allow(key, now)`` is true at most once per ``window`` seconds per key: sending more
    typing signals than that only spends frames the server drops (``"sent": false``)."""

    window: float = 2.0  # the server's CAAS_TYPING_THROTTLE_SECONDS default
    last: dict[str, float] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        before = self.last.get(key)
        if before is not None and now - before < self.window:
            return False
        self.last[key] = now
        return True
