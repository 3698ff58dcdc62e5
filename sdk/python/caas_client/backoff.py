"""Reconnect and retry delays: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for attempt 0, 1, 2…: uniform in ``[0, min(cap, base * factor**attempt)]`` (full
    jitter, so that many clients cut off together do not come back together).

    ``failed()`` returns the next delay and counts the attempt; ``reset()`` after a success."""

    base: float = 0.25
    cap: float = 15.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay of ``attempt``."""
        if attempt >= 64:  # base * factor**64 is far beyond any cap
            return self.cap
        return min(self.cap, self.base * self.factor**attempt)

    def failed(self) -> float:
        delay = self.rng.uniform(0, self.ceiling(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
