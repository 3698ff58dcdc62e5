"""A channel's position in its event stream: what has been delivered, and where to resume.

Pure state, no I/O: the socket code feeds it frames and sends what it says. The server delivers
each ``seq`` once per subscription, in order; across reconnects a client can see a seq again (the
replay starts at the last seq it *recorded*), and a bug or a lagging copy could skip one. The
timeline makes both harmless: an old seq is dropped, a gap asks for a resubscribe from the last
seq delivered, so the application sees every seq exactly once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    DELIVER = "deliver"  # the next seq: hand it to the application
    DUPLICATE = "duplicate"  # seen already: drop
    GAP = "gap"  # a seq is missing before it: drop, resubscribe from ``seq``


@dataclass
class Timeline:
    """``seq``: the last seq delivered (``None`` before anything is known); ``head_seq``: the
    channel's head when the server last confirmed the subscription."""

    seq: int | None = None
    head_seq: int | None = None

    def subscribed(self, head_seq: int) -> None:
        """The server confirmed the subscription. A live-only timeline starts at the head."""
        self.head_seq = head_seq
        if self.seq is None:
            self.seq = head_seq

    def offer(self, seq: int) -> Verdict:
        """What to do with the event of ``seq``; a delivered one advances the timeline."""
        if self.seq is None:  # live-only and not yet confirmed: take it as the start
            self.seq = seq
            return Verdict.DELIVER
        if seq <= self.seq:
            return Verdict.DUPLICATE
        if seq != self.seq + 1:
            return Verdict.GAP
        self.seq = seq
        return Verdict.DELIVER

    @property
    def since_seq(self) -> int | None:
        """What to resume from: the ``since_seq`` of the next subscribe."""
        return self.seq

    @property
    def caught_up(self) -> bool:
        """Whether everything up to the head seen at (re)subscribe time was delivered."""
        return self.head_seq is not None and self.seq is not None and self.seq >= self.head_seq
