"""Every upcaster of CAAS, in one place: how a stored payload of an older schema version is
lifted to the current one when the log is read (``domain.events.upcast``; stored events are
never rewritten). Imported by the ``domain`` package, so any reader of events has them.

Add one step per version change, ``(event type, from version) -> payload``, pure and total:
a replay of the oldest log must give the read models a new log of the same facts gives.
"""

from __future__ import annotations

from typing import Any

from domain.events import mentions_in, register_upcaster


def message_posted_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """``MessagePosted`` v2 added ``mentions``: derived from the text exactly as the decider
    derives it for a new post, so old and new messages read alike."""
    return {**payload, "mentions": mentions_in(payload.get("text") or "")}


register_upcaster("MessagePosted", 1, message_posted_v1_to_v2)
