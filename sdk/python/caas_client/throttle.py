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


@dataclass
class Bucket:
    """A token bucket: :meth:`wait` says how long to wait before one more frame may go, so the
    client stays under the server's frame rate limit (CAAS_WS_FRAMES_PER_SECOND, _BURST) and
    its frames are not dropped."""

    rate: float = 15.0  # frames per second, under the server's default of 20
    burst: float = 80.0  # under the server's default of 100
    tokens: float = -1.0  # -1: full at first use
    at: float = 0.0

    def wait(self, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
