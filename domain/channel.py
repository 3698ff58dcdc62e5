"""The channel aggregate: membership, roles, moderation, messages, reactions, read markers.

Every rule of a conversation is decided here, from the channel's own history alone. Rules
that need other aggregates (the members must be registered users) are checked by the
command layer before it calls :func:`decide`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from domain import errors
from domain.base import Actor, Command, Decision, Unchanged
from domain.events import (
    ChannelCreated,
    ChannelDayShredded,
    ChannelKind,
    DomainEvent,
    LegalHoldPlaced,
    LegalHoldReleased,
    MemberAdded,
    MemberBanned,
    MemberMuted,
    MemberRemoved,
    MemberRoleChanged,
    MemberUnbanned,
    MemberUnmuted,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    ReactionAdded,
    ReactionRemoved,
    ReadMarkerMoved,
    RetentionSet,
    Role,
    mentions_in,
)
from domain.retention import (
    PlaceLegalHold,
    ReleaseLegalHold,
    SetRetention,
    ShredChannelDay,
    decide_place,
    decide_release,
    decide_retention,
    decide_shred,
)

ADMIN_ROLES = frozenset({"owner", "admin"})
DIRECT_PREFIX = "dm-"


def direct_channel_id(members: list[str]) -> str:
    """The id of the direct channel of ``members``: the same whoever opens it, in any order."""
    return DIRECT_PREFIX + hashlib.sha256("\n".join(sorted(set(members))).encode()).hexdigest()[:24]


def check_channel_id(channel_id: str, kind: ChannelKind, members: list[str]) -> None:
    """The ``dm-`` ids are reserved: each names the direct channel of exactly its members.

    Otherwise anyone could create a channel under the id of someone else's direct channel
    (a group with themselves as owner, or a direct channel of other members) and that pair
    could never open theirs. A direct channel may still be given a custom id outside ``dm-``.
    """
    if channel_id.startswith(DIRECT_PREFIX) and (kind != "direct" or channel_id != direct_channel_id(members)):
        raise errors.ReservedChannelId(
            f"channel ids starting with {DIRECT_PREFIX!r} are reserved for direct channels, each named after its "
            "two members; omit channel_id for a direct channel, or choose another id",
            channel_id=channel_id,
        )


# --- commands ------------------------------------------------------------------------------
class ChannelCommand(Command):
    actor: Actor


class CreateChannel(ChannelCommand):
    name: str
    kind: ChannelKind
    e2e: bool = False
    members: list[str]
    max_members: int = 1000


class AddMember(ChannelCommand):
    user_id: str
    role: Role = "member"
    max_members: int = 1000


class RemoveMember(ChannelCommand):
    user_id: str


class PostMessage(ChannelCommand):
    message_id: str
    author_id: str
    text: str
    parent_id: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    client_msg_id: str | None = None
    now: str
    e2e: dict[str, Any] | None = None  # the ciphertext envelope: only, and always, in an e2e channel


class EditMessage(ChannelCommand):
    message_id: str
    text: str
    e2e: dict[str, Any] | None = None


class DeleteMessage(ChannelCommand):
    message_id: str


class AddReaction(ChannelCommand):
    message_id: str
    user_id: str
    emoji: str


class RemoveReaction(ChannelCommand):
    message_id: str
    user_id: str
    emoji: str


class MoveReadMarker(ChannelCommand):
    user_id: str
    seq: int


class MuteMember(ChannelCommand):
    user_id: str
    until: str | None = None


class UnmuteMember(ChannelCommand):
    user_id: str


class BanMember(ChannelCommand):
    user_id: str
    reason: str | None = None


class UnbanMember(ChannelCommand):
    user_id: str


# --- state ---------------------------------------------------------------------------------
@dataclass(slots=True)
class MessageState:
    author_id: str
    seq: int
    parent_id: str | None
    deleted_seq: int = 0
    edited_seq: int = 0  # of the latest MessageEdited: what a replay shows instead of older texts
    reactions: dict[tuple[str, str], int] = field(default_factory=dict)  # (emoji, user) -> seq


@dataclass(slots=True)
class ChannelState:
    version: int = 0
    name: str = ""
    kind: ChannelKind = "group"
    e2e: bool = False
    members: dict[str, Role] = field(default_factory=dict)
    member_seq: dict[str, int] = field(default_factory=dict)
    banned: dict[str, int] = field(default_factory=dict)  # user -> seq of the ban
    muted: dict[str, tuple[str | None, int]] = field(default_factory=dict)  # user -> (until, seq)
    messages: dict[str, MessageState] = field(default_factory=dict)
    client_msg_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (author, id) -> seq
    read_markers: dict[str, tuple[int, int]] = field(default_factory=dict)  # user -> (seq, at)
    # retention (docs/retention.md): the channel's override (None: the tenant's default), the
    # legal hold in force (its seq; 0: none), the UTC days whose key was destroyed (day -> seq)
    retention_days: int | None = None
    retention_seq: int = 0
    hold_seq: int = 0
    shredded_days: dict[str, int] = field(default_factory=dict)

    @property
    def legal_hold(self) -> bool:
        return self.hold_seq > 0

    @property
    def exists(self) -> bool:
        return self.version > 0


# --- decide --------------------------------------------------------------------------------
def decide(state: ChannelState, command: Command) -> Decision:
    """Turn a command into the events it causes, or raise the rule it breaks."""
    if isinstance(command, CreateChannel):
        return _create(state, command)
    if not state.exists:
        raise errors.ChannelNotFound("no such channel; create it with POST /v1/channels")
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"not a channel command: {type(command).__name__}")
    return handler(state, command)


def _create(state: ChannelState, c: CreateChannel) -> Decision:
    members = list(dict.fromkeys(c.members))
    creator = c.actor.id if c.actor.kind == "user" else None
    if creator is not None and creator not in members:
        members.insert(0, creator)
    if c.kind == "direct" and len(members) != 2:
        raise errors.DirectChannelMembers(
            "a direct channel has exactly two members; list the other user in members",
            members=members,
        )
    if len(members) > c.max_members:
        raise errors.Invalid(f"a channel holds at most {c.max_members} members", members=len(members))
    if state.exists:
        if state.kind == "direct" and c.kind == "direct" and set(state.members) == set(members):
            return Unchanged(1)
        raise errors.ChannelAlreadyExists("a channel with this channel_id already exists")
    events: list[DomainEvent] = [ChannelCreated(name=c.name, kind=c.kind, e2e=c.e2e, created_by=creator)]
    for user_id in members:
        role: Role = "owner" if user_id == creator and c.kind == "group" else "member"
        events.append(MemberAdded(user_id=user_id, role=role))
    return events


def _role(state: ChannelState, actor: Actor) -> str | None:
    """The actor's standing in the channel: ``tenant`` (super-admin), a role, or ``None``."""
    if actor.kind in ("tenant", "admin"):
        return "tenant"
    return state.members.get(actor.id)


def _require_admin(state: ChannelState, actor: Actor) -> str:
    role = _role(state, actor)
    if role is None:
        raise errors.NotAMember(f"user {actor.id!r} is not a member of this channel", user_id=actor.id)
    if role != "tenant" and role not in ADMIN_ROLES:
        raise errors.NotChannelAdmin(
            "only a channel owner or admin (or the tenant's API key) may do this", user_id=actor.id
        )
    return role


def _require_member(state: ChannelState, user_id: str) -> None:
    if user_id not in state.members:
        if user_id in state.banned:
            raise errors.MemberBanned(f"user {user_id!r} is banned from this channel", user_id=user_id)
        raise errors.NotAMember(
            f"user {user_id!r} is not a member of this channel; add them with POST /v1/channels/{{cid}}/members",
            user_id=user_id,
        )


def _require_acting_as(actor: Actor, user_id: str) -> None:
    if actor.kind == "user" and actor.id != user_id:
        raise errors.Forbidden("a user may act only for themselves", user_id=user_id)


def _no_direct_membership_change(state: ChannelState) -> None:
    if state.kind == "direct":
        raise errors.DirectChannelMembers("the members of a direct channel cannot change")


def _guard_owner_target(state: ChannelState, actor_role: str, target: str) -> None:
    if state.members.get(target) == "owner" and actor_role not in ("owner", "tenant"):
        raise errors.NotOwner("only a channel owner (or the tenant's API key) may act on an owner", user_id=target)


def _add_member(state: ChannelState, c: AddMember) -> Decision:
    _no_direct_membership_change(state)
    role = _require_admin(state, c.actor)
    if c.role == "owner" and role not in ("owner", "tenant"):
        raise errors.NotOwner("only an owner (or the tenant's API key) may make someone an owner")
    if c.user_id in state.banned:
        raise errors.MemberBanned(
            f"user {c.user_id!r} is banned from this channel; unban them first", user_id=c.user_id
        )
    current = state.members.get(c.user_id)
    if current == c.role:
        return Unchanged(state.member_seq[c.user_id])
    if current is not None:
        _guard_owner_target(state, role, c.user_id)
        return [MemberRoleChanged(user_id=c.user_id, role=c.role)]
    if len(state.members) >= c.max_members:
        raise errors.Invalid(f"a channel holds at most {c.max_members} members", user_id=c.user_id)
    return [MemberAdded(user_id=c.user_id, role=c.role)]


def _remove_member(state: ChannelState, c: RemoveMember) -> Decision:
    _no_direct_membership_change(state)
    if c.user_id not in state.members:
        raise errors.MemberNotFound(f"user {c.user_id!r} is not a member of this channel", user_id=c.user_id)
    if not (c.actor.kind == "user" and c.actor.id == c.user_id):
        _guard_owner_target(state, _require_admin(state, c.actor), c.user_id)
    return [MemberRemoved(user_id=c.user_id)]


def _post(state: ChannelState, c: PostMessage) -> Decision:
    _require_acting_as(c.actor, c.author_id)
    if c.client_msg_id is not None:
        # a retry returns the first result even if the author has since left, been banned or muted
        seen = state.client_msg_ids.get((c.author_id, c.client_msg_id))
        if seen is not None:
            return Unchanged(seen)
    _require_member(state, c.author_id)
    if c.actor.kind == "user" and c.author_id in state.muted:
        until, _ = state.muted[c.author_id]
        if until is None or until > c.now:
            raise errors.MemberMuted(
                f"user {c.author_id!r} is muted in this channel" + (f" until {until}" if until else ""),
                user_id=c.author_id,
                until=until,
            )
    _check_e2e(state, c.text, c.attachments, c.e2e)
    if c.message_id in state.messages:
        raise errors.Conflict("a message with this message_id already exists", message_id=c.message_id)
    if c.parent_id is not None:
        parent = state.messages.get(c.parent_id)
        if parent is None:
            raise errors.InvalidParent(f"parent message {c.parent_id!r} does not exist in this channel")
        if parent.parent_id is not None:
            raise errors.InvalidParent("replies go to the thread's first message, not to another reply")
        if parent.deleted_seq:
            raise errors.InvalidParent("the parent message was deleted")
    return [
        MessagePosted(
            message_id=c.message_id,
            author_id=c.author_id,
            text=c.text,
            parent_id=c.parent_id,
            attachments=c.attachments,
            client_msg_id=c.client_msg_id,
            mentions=mentions_in(c.text),
            e2e=c.e2e,
        )
    ]


def _check_e2e(state: ChannelState, text: str, attachments: list[dict[str, Any]], e2e: dict[str, Any] | None) -> None:
    """An e2e channel carries ciphertext envelopes only; another channel never carries one."""
    if state.e2e:
        if text or attachments:
            raise errors.PlaintextInE2EChannel(
                "this channel is end-to-end encrypted: send the message as an e2e ciphertext envelope, "
                "with no text or attachments (docs/e2e.md)"
            )
        if e2e is None:
            raise errors.PlaintextInE2EChannel("this channel is end-to-end encrypted: the e2e envelope is missing")
    elif e2e is not None:
        raise errors.NotE2EChannel("e2e envelopes go to channels created with e2e: true; send text here")


def _message(state: ChannelState, message_id: str) -> MessageState:
    message = state.messages.get(message_id)
    if message is None:
        raise errors.MessageNotFound(f"no message {message_id!r} in this channel", message_id=message_id)
    return message


def _edit(state: ChannelState, c: EditMessage) -> Decision:
    message = _message(state, c.message_id)
    if c.actor.kind == "user" and c.actor.id != message.author_id:
        raise errors.NotAuthor("only the author may edit a message", message_id=c.message_id)
    if message.deleted_seq:
        raise errors.MessageDeleted("a deleted message cannot be edited", message_id=c.message_id)
    _check_e2e(state, c.text, [], c.e2e)
    return [MessageEdited(message_id=c.message_id, text=c.text, e2e=c.e2e, author_id=message.author_id)]


def _delete(state: ChannelState, c: DeleteMessage) -> Decision:
    message = _message(state, c.message_id)
    if c.actor.kind == "user" and c.actor.id != message.author_id:
        role = _role(state, c.actor)
        if role not in ADMIN_ROLES:
            raise errors.NotAuthor(
                "only the author or a channel owner or admin may delete a message", message_id=c.message_id
            )
    if message.deleted_seq:
        return Unchanged(message.deleted_seq)
    return [MessageDeleted(message_id=c.message_id)]


def _react(state: ChannelState, c: AddReaction) -> Decision:
    _require_acting_as(c.actor, c.user_id)
    _require_member(state, c.user_id)
    message = _message(state, c.message_id)
    if message.deleted_seq:
        raise errors.MessageDeleted("a deleted message cannot be reacted to", message_id=c.message_id)
    seen = message.reactions.get((c.emoji, c.user_id))
    if seen is not None:
        return Unchanged(seen)
    return [ReactionAdded(message_id=c.message_id, user_id=c.user_id, emoji=c.emoji)]


def _unreact(state: ChannelState, c: RemoveReaction) -> Decision:
    _require_acting_as(c.actor, c.user_id)
    _require_member(state, c.user_id)
    message = _message(state, c.message_id)
    if (c.emoji, c.user_id) not in message.reactions:
        raise errors.ReactionNotFound(
            f"user {c.user_id!r} has no {c.emoji!r} reaction on this message", message_id=c.message_id
        )
    return [ReactionRemoved(message_id=c.message_id, user_id=c.user_id, emoji=c.emoji)]


def _read(state: ChannelState, c: MoveReadMarker) -> Decision:
    _require_acting_as(c.actor, c.user_id)
    _require_member(state, c.user_id)
    if c.seq > state.version:
        raise errors.ReadMarkerAhead(
            f"seq {c.seq} is past the channel's head_seq {state.version}", seq=c.seq, head_seq=state.version
        )
    current = state.read_markers.get(c.user_id)
    if current is not None and c.seq <= current[0]:
        return Unchanged(current[1])  # markers never move backwards
    return [ReadMarkerMoved(user_id=c.user_id, seq=c.seq)]


def _mute(state: ChannelState, c: MuteMember) -> Decision:
    role = _require_admin(state, c.actor)
    if c.user_id not in state.members:
        raise errors.MemberNotFound(f"user {c.user_id!r} is not a member of this channel", user_id=c.user_id)
    _guard_owner_target(state, role, c.user_id)
    current = state.muted.get(c.user_id)
    if current is not None and current[0] == c.until:
        return Unchanged(current[1])
    return [MemberMuted(user_id=c.user_id, until=c.until)]


def _unmute(state: ChannelState, c: UnmuteMember) -> Decision:
    _require_admin(state, c.actor)
    if c.user_id not in state.muted:
        raise errors.MemberNotFound(f"user {c.user_id!r} is not muted in this channel", user_id=c.user_id)
    return [MemberUnmuted(user_id=c.user_id)]


def _ban(state: ChannelState, c: BanMember) -> Decision:
    _no_direct_membership_change(state)
    role = _require_admin(state, c.actor)
    _guard_owner_target(state, role, c.user_id)
    if c.user_id in state.banned:
        return Unchanged(state.banned[c.user_id])
    return [MemberBanned(user_id=c.user_id, reason=c.reason)]


def _unban(state: ChannelState, c: UnbanMember) -> Decision:
    _require_admin(state, c.actor)
    if c.user_id not in state.banned:
        raise errors.MemberNotFound(f"user {c.user_id!r} is not banned from this channel", user_id=c.user_id)
    return [MemberUnbanned(user_id=c.user_id)]


_HANDLERS: dict[type[Command], Callable[[ChannelState, Any], Decision]] = {
    AddMember: _add_member,
    RemoveMember: _remove_member,
    PostMessage: _post,
    EditMessage: _edit,
    DeleteMessage: _delete,
    AddReaction: _react,
    RemoveReaction: _unreact,
    MoveReadMarker: _read,
    MuteMember: _mute,
    UnmuteMember: _unmute,
    BanMember: _ban,
    UnbanMember: _unban,
    SetRetention: lambda s, c: decide_retention(s.retention_days, s.retention_seq, c),
    PlaceLegalHold: lambda s, c: decide_place(s.hold_seq, c),
    ReleaseLegalHold: lambda s, c: decide_release(s.hold_seq, c),
    ShredChannelDay: lambda s, c: decide_shred(s.shredded_days, s.legal_hold, c),
}


# --- evolve --------------------------------------------------------------------------------
def evolve(state: ChannelState, event: DomainEvent) -> ChannelState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    seq = state.version
    match event:
        case ChannelCreated():
            state.name, state.kind, state.e2e = event.name, event.kind, event.e2e
        case MemberAdded() | MemberRoleChanged():
            state.members[event.user_id] = event.role
            state.member_seq[event.user_id] = seq
        case MemberRemoved():
            state.members.pop(event.user_id, None)
            state.muted.pop(event.user_id, None)
        case MessagePosted():
            state.messages[event.message_id] = MessageState(event.author_id, seq, event.parent_id)
            if event.client_msg_id is not None:
                state.client_msg_ids[(event.author_id, event.client_msg_id)] = seq
        case MessageEdited():
            state.messages[event.message_id].edited_seq = seq
        case MessageDeleted():
            state.messages[event.message_id].deleted_seq = seq
        case ReactionAdded():
            state.messages[event.message_id].reactions[(event.emoji, event.user_id)] = seq
        case ReactionRemoved():
            state.messages[event.message_id].reactions.pop((event.emoji, event.user_id), None)
        case ReadMarkerMoved():
            state.read_markers[event.user_id] = (event.seq, seq)
        case MemberMuted():
            state.muted[event.user_id] = (event.until, seq)
        case MemberUnmuted():
            state.muted.pop(event.user_id, None)
        case MemberBanned():
            state.banned[event.user_id] = seq
            state.members.pop(event.user_id, None)
            state.muted.pop(event.user_id, None)
        case MemberUnbanned():
            state.banned.pop(event.user_id, None)
        case RetentionSet():
            state.retention_days, state.retention_seq = event.days, seq
        case LegalHoldPlaced():
            state.hold_seq = seq
        case LegalHoldReleased():
            state.hold_seq = 0
        case ChannelDayShredded():
            state.shredded_days[event.day] = seq
    return state
