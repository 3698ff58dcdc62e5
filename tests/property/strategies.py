"""Hypothesis strategies for channel histories: random commands decided by the real deciders.

Commands are drawn against the channel's current state (existing message ids, members,
markers) from small pools of users, emoji and ``client_msg_id`` values, so that valid
commands, retries and rule-breaking commands all come up often. A history keeps every
step's outcome; its events are what the decider really recorded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st

from domain import channel as ch
from domain.base import Actor, Command, Decision, Unchanged, format_time
from domain.errors import DomainError
from domain.events import DomainEvent, Event

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[T]], T]

USERS = ("u1", "u2", "u3", "u4", "u5")
EMOJI = ("👍", "🎉", "ok")
CLIENT_IDS = ("c1", "c2", "c3")
TEXTS = ("hi", "hello", "ok", "✨ ünïcode", "", "thanks @u2.")
TENANT = Actor("tenant", "t")
BASE = datetime(2026, 1, 1, tzinfo=UTC)

KINDS = (
    ("post",) * 6
    + ("react",) * 3
    + ("edit", "edit", "delete", "delete", "unreact", "unreact", "read", "read", "add", "add", "add", "remove")
    + ("mute", "unmute", "ban", "unban", "create")
)


def at(step: int) -> str:
    """The time of a step: one second apart, formatted as the API formats times."""
    return format_time(BASE + timedelta(seconds=step))


@dataclass(slots=True)
class Step:
    command: Command
    before: ch.ChannelState
    outcome: list[DomainEvent] | Unchanged | DomainError
    first_seq: int  # seq the step's first event got (or would have got)


@dataclass(slots=True)
class History:
    state: ch.ChannelState = field(default_factory=ch.ChannelState)
    events: list[DomainEvent] = field(default_factory=list)
    times: list[str] = field(default_factory=list)  # occurred_at of each event
    actors: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"{n}. {_short(s.command)} -> {_short(s.outcome)}" for n, s in enumerate(self.steps)]
        return "History(\n  " + "\n  ".join(lines) + "\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints an example
        printer.text(repr(self))

    def run(self, command: Command, now: str) -> Decision | DomainError:
        """Decide ``command`` and, if it records events, evolve the state by them."""
        before = copy.deepcopy(self.state)
        try:
            decision: Decision | DomainError = ch.decide(self.state, command)
        except DomainError as exc:
            decision = exc
        self.steps.append(Step(command, before, decision, len(self.events) + 1))
        if isinstance(decision, list):
            actor = command.actor.label if isinstance(command, ch.ChannelCommand) else None
            for event in decision:
                ch.evolve(self.state, event)
                self.events.append(event)
                self.times.append(now)
                self.actors.append(actor or "")
        return decision


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, DomainError):
        return f"{type(value).__name__}"
    if isinstance(value, Command | DomainEvent):
        data = {k: v for k, v in value.model_dump().items() if v not in (None, [], "general")}
        actor = data.pop("actor", None)
        who = f"{actor['kind']}:{actor['id']} " if actor else ""
        return f"{who}{type(value).__name__}({', '.join(f'{k}={v!r}' for k, v in data.items())})"
    return repr(value)


def pick(draw: Draw[Any], options: Sequence[T]) -> T:
    """One of ``options``. Drawing an index keeps strategies cached (building one per draw is slow)."""
    return options[draw(st.integers(0, len(options) - 1))]


def chance(draw: Draw[Any], one_in: int) -> bool:
    return draw(st.integers(0, one_in - 1)) == 0


def draw_actor(draw: Draw[Any], state: ch.ChannelState, admin: bool, careful: bool) -> Actor:
    """Mostly a member (an owner or admin when ``admin``), sometimes anyone, sometimes the tenant."""
    if chance(draw, 3 if admin else 6):
        return TENANT
    admins = sorted(u for u, role in state.members.items() if role in ch.ADMIN_ROLES)
    if admin and admins and (careful or not chance(draw, 3)):
        return Actor("user", pick(draw, admins))
    if state.members and (careful or not chance(draw, 3)):
        return Actor("user", pick(draw, sorted(state.members)))
    return Actor("user", pick(draw, USERS))


def pick_biased(draw: Draw[Any], likely: Sequence[str], careful: bool) -> str:
    """Usually one of ``likely`` (when there are any), otherwise any user."""
    return pick(draw, likely) if likely and (careful or not chance(draw, 4)) else pick(draw, USERS)


def draw_create(draw: Draw[Any]) -> ch.CreateChannel:
    actor = TENANT if chance(draw, 3) else Actor("user", pick(draw, USERS))
    kind = "direct" if chance(draw, 3) else "group"
    size = draw(st.integers(0, 4))
    if kind == "direct" and not chance(draw, 3):
        size = 1 if actor.kind == "user" else 2  # usually a valid pair
    members = [pick(draw, USERS) for _ in range(size)]
    return ch.CreateChannel(actor=actor, name="general", kind=kind, e2e=chance(draw, 2), members=members)


def draw_command(draw: Draw[Any], state: ch.ChannelState, step: int, careful: bool = False) -> Command:
    """One channel command against ``state``: often valid, sometimes a retry, sometimes forbidden.

    A ``careful`` caller mostly sends commands that can succeed (for longer, richer histories).
    """
    if not state.exists:
        return draw_create(draw)
    kind = pick(draw, KINDS)
    if kind == "create":
        return draw_create(draw)
    actor = draw_actor(draw, state, kind in ("add", "remove", "mute", "unmute", "ban", "unban", "delete"), careful)

    def sloppy(one_in: int) -> bool:
        return not careful and chance(draw, one_in)

    def me() -> str:
        return actor.id if actor.kind == "user" else pick(draw, USERS)

    def target() -> str:
        likely = {"unmute": state.muted, "unban": state.banned}.get(kind, state.members)
        return pick_biased(draw, sorted(likely), careful)

    def message() -> str:
        return pick(draw, [*sorted(state.messages), *([] if careful and state.messages else ["missing"])])

    match kind:
        case "post":
            if state.muted and chance(draw, 3):
                actor = Actor("user", pick(draw, sorted(state.muted)))  # does the mute hold?
            parent = None
            threads = [m for m, s in sorted(state.messages.items()) if s.parent_id is None and not s.deleted_seq]
            if chance(draw, 3) and (threads or not careful):
                parent = pick(draw, [*threads, *([] if careful else ["missing"])])
            cipher = state.e2e != sloppy(5)  # sloppy: plaintext in an e2e channel, or an envelope elsewhere
            return ch.PostMessage(
                actor=actor,
                message_id=f"m{step}",
                author_id=target() if sloppy(4) else me(),
                text="" if cipher else pick(draw, TEXTS),
                parent_id=parent,
                client_msg_id=None if chance(draw, 3) else pick(draw, CLIENT_IDS),
                now=at(step),
                e2e=envelope(step) if cipher else None,
            )
        case "edit":
            cipher = state.e2e != sloppy(5)
            text = "" if cipher else f"edit {step}"
            return ch.EditMessage(actor=actor, message_id=message(), text=text, e2e=envelope(step) if cipher else None)
        case "delete":
            return ch.DeleteMessage(actor=actor, message_id=message())
        case "react":
            return ch.AddReaction(actor=actor, message_id=message(), user_id=me(), emoji=pick(draw, EMOJI))
        case "unreact":
            present = sorted((m, e, u) for m, s in state.messages.items() for e, u in s.reactions)
            if present and not sloppy(4):
                mid, emoji, user_id = pick(draw, present)
            else:
                mid, emoji, user_id = message(), pick(draw, EMOJI), me()
            return ch.RemoveReaction(actor=actor, message_id=mid, user_id=user_id, emoji=emoji)
        case "read":
            seq = state.version if chance(draw, 2) else draw(st.integers(1, state.version + 1))
            return ch.MoveReadMarker(actor=actor, user_id=me(), seq=seq)
        case "add":
            return ch.AddMember(actor=actor, user_id=target(), role=pick(draw, ("member", "member", "admin", "owner")))
        case "remove":
            return ch.RemoveMember(actor=actor, user_id=me() if chance(draw, 2) else target())
        case "mute":
            until = None if chance(draw, 3) else at(step + draw(st.integers(-3, 8)))
            return ch.MuteMember(actor=actor, user_id=target(), until=until)
        case "unmute":
            return ch.UnmuteMember(actor=actor, user_id=target())
        case "ban":
            return ch.BanMember(actor=actor, user_id=target(), reason=None if chance(draw, 2) else "spam")
    return ch.UnbanMember(actor=actor, user_id=target())


def envelope(step: int) -> dict[str, Any]:
    """An e2e ciphertext envelope (docs/e2e.md): the decider stores it as it is."""
    return {"sender_device": "d1", "ciphertexts": [{"user_id": "u1", "device_id": "d1", "body": f"c{step}"}]}


def play(draw: Draw[Any], steps: int, careful: bool = False) -> History:
    """A channel history of ``steps`` drawn commands."""
    history = History()
    for step in range(steps):
        history.run(draw_command(draw, history.state, step, careful), at(step))
    return history


@st.composite
def histories(draw: Draw[Any], max_steps: int = 40) -> History:
    return play(draw, draw(st.integers(0, max_steps)))


def envelopes(tenant_id: str, channel_id: str, history: History) -> list[Event]:
    """The history's events as the log would record them (positions assigned later)."""
    return [
        Event(
            event_id=f"{tenant_id}/{channel_id}/{n}",
            tenant_id=tenant_id,
            stream=f"channel:{channel_id}",
            seq=n,
            position=0,
            type=event.type,
            schema_version=event.schema_version,
            occurred_at=history.times[n - 1],
            actor=history.actors[n - 1],
            payload=event.model_dump(mode="json"),
        )
        for n, event in enumerate(history.events, start=1)
    ]
