"""The chat read model: channels, memberships, message timelines, users.

Documents (all scoped by ``tenant_id``):

- ``channels/<channel_id>``: name, kind, e2e, created_by, created_at, head_seq,
  last_message_seq, last_message_at.
- ``memberships/<channel_id>/<user_id>``: role, active, banned, muted, muted_until,
  last_read_seq, joined_at.
- ``messages/<channel_id>/<message_id>``: the message as docs/api.md renders it, with edits,
  tombstones, reactions and reply counts applied.
- ``users/<user_id>``: name, metadata.

Each event yields at most one op per document, guarded by the event's position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.events import Event
from projections.ports import Op

NAME = "chat"
COLLECTIONS = ("channels", "memberships", "messages", "users")


def message_key(channel_id: str, message_id: str) -> str:
    return f"{channel_id}/{message_id}"


def membership_key(channel_id: str, user_id: str) -> str:
    return f"{channel_id}/{user_id}"


def project(event: Event) -> list[Op]:
    """The read-model writes one event causes (none for events this model ignores)."""
    kind = event.stream_type
    if kind == "user":
        return _user(event)
    if kind != "channel":
        return []
    handler = _CHANNEL.get(event.type)
    extra_channel, ops = handler(event) if handler is not None else ({}, [])
    cid = event.stream_id
    channel = Op(
        "channels",
        event.tenant_id,
        cid,
        event.position,
        set={"head_seq": event.seq, **extra_channel},
        insert={"channel_id": cid} if event.type != "ChannelCreated" else {},
    )
    return [channel, *ops]


def _user(event: Event) -> list[Op]:
    uid = event.stream_id
    if event.type == "UserErased":  # docs/erasure.md: the user's messages are erased by the API (erase_user)
        fields = {"name": "", "metadata": {}, "erased": True}
        return [Op("users", event.tenant_id, uid, event.position, set=fields, insert={"user_id": uid})]
    if event.type not in ("UserRegistered", "UserUpdated"):
        return []
    p = event.payload
    changed = {"name": p["name"], "metadata": p.get("metadata", {}), "updated_at": event.occurred_at, **_erased(p)}
    return [
        Op(
            "users",
            event.tenant_id,
            uid,
            event.position,
            set=changed,
            insert={"user_id": uid, "created_at": event.occurred_at},
        )
    ]


def _erased(payload: dict[str, Any]) -> dict[str, Any]:
    """``erased: true`` if the event's personal fields read as erased (docs/erasure.md), else nothing."""
    return {"erased": True} if payload.get("erased") else {}


# What the API overwrites in the documents of an erased user (docs/erasure.md): (collection, the
# field naming the user, the erased values). The user's own document is erased by UserErased.
ERASURES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("messages", "author_id", {"text": "", "attachments": [], "mentions": [], "erased": True}),
)


# What the retention sweeper overwrites in the messages of a shredded channel-day (docs/retention.md),
# found by their ``chday`` (:func:`channel_day`, never shown by the queries).
EXPIRED: dict[str, Any] = {"text": "", "attachments": [], "mentions": [], "expired": True}


def channel_day(channel_id: str, day: str) -> str:
    """A message document's channel and UTC day of posting (``YYYY-MM-DD``), as one value."""
    return f"{channel_id}/{day}"


Result = tuple[dict[str, Any], list[Op]]


def _membership(event: Event, user_id: str, fields: dict[str, Any]) -> Op:
    cid = event.stream_id
    return Op(
        "memberships",
        event.tenant_id,
        membership_key(cid, user_id),
        event.position,
        set=fields,
        insert={"channel_id": cid, "user_id": user_id, "last_read_seq": 0} if "last_read_seq" not in fields
        else {"channel_id": cid, "user_id": user_id},
    )  # fmt: skip


def _message(event: Event, message_id: str, **op: Any) -> Op:
    cid = event.stream_id
    return Op("messages", event.tenant_id, message_key(cid, message_id), event.position, **op)


def _created(event: Event) -> Result:
    p = event.payload
    cid = event.stream_id
    return {
        "channel_id": cid,
        "name": p["name"],
        "kind": p["kind"],
        "e2e": p.get("e2e", False),
        "created_by": p.get("created_by"),
        "created_at": event.occurred_at,
        "last_message_seq": 0,
        "last_message_at": None,
    }, []


def _member_added(event: Event) -> Result:
    p = event.payload
    fields: dict[str, Any] = {
        "role": p["role"],
        "active": True,
        "banned": False,
        "muted": False,
        "joined_at": event.occurred_at,
    }
    return {}, [_membership(event, p["user_id"], fields)]


def _role_changed(event: Event) -> Result:
    return {}, [_membership(event, event.payload["user_id"], {"role": event.payload["role"]})]


def _member_removed(event: Event) -> Result:
    return {}, [_membership(event, event.payload["user_id"], {"active": False, "muted": False})]


def _banned(event: Event) -> Result:
    p = event.payload
    fields = {"active": False, "banned": True, "ban_reason": p.get("reason"), "muted": False}
    return {}, [_membership(event, p["user_id"], fields)]


def _unbanned(event: Event) -> Result:
    return {}, [_membership(event, event.payload["user_id"], {"banned": False})]


def _muted(event: Event) -> Result:
    p = event.payload
    return {}, [_membership(event, p["user_id"], {"muted": True, "muted_until": p.get("until")})]


def _unmuted(event: Event) -> Result:
    return {}, [_membership(event, event.payload["user_id"], {"muted": False, "muted_until": None})]


def _posted(event: Event) -> Result:
    p = event.payload
    cid = event.stream_id
    doc = {
        "message_id": p["message_id"],
        "channel_id": cid,
        "seq": event.seq,
        "author_id": p["author_id"],
        "text": p["text"],
        "parent_id": p.get("parent_id"),
        "attachments": p.get("attachments", []),
        "client_msg_id": p.get("client_msg_id"),
        "mentions": p.get("mentions", []),
        "e2e": p.get("e2e"),  # the ciphertext envelope in an e2e channel (docs/e2e.md)
        "created_at": event.occurred_at,
        "edited_at": None,
        "deleted": False,
        "reactions": {},
        "reply_count": 0,
        "chday": channel_day(cid, event.occurred_at[:10]),
        **_erased(p),
    }
    ops = [_message(event, p["message_id"], set=doc)]
    parent = p.get("parent_id")
    if parent is not None:
        ops.append(_message(event, parent, inc={"reply_count": 1}, set={"last_reply_at": event.occurred_at}))
        return {}, ops
    return {"last_message_seq": event.seq, "last_message_at": event.occurred_at}, ops


def _edited(event: Event) -> Result:
    p = event.payload
    changed = {"text": p["text"], "edited_at": event.occurred_at, "e2e": p.get("e2e"), **_erased(p)}
    return {}, [_message(event, p["message_id"], set=changed)]


def _deleted(event: Event) -> Result:
    fields: dict[str, Any] = {
        "deleted": True,
        "text": None,
        "attachments": [],
        "mentions": [],
        "e2e": None,
        "reactions": {},
        "deleted_at": event.occurred_at,
    }
    return {}, [_message(event, event.payload["message_id"], set=fields)]


def _reaction_added(event: Event) -> Result:
    p = event.payload
    return {}, [_message(event, p["message_id"], add={f"reactions.{p['emoji']}": p["user_id"]})]


def _reaction_removed(event: Event) -> Result:
    p = event.payload
    return {}, [_message(event, p["message_id"], pull={f"reactions.{p['emoji']}": p["user_id"]})]


def _read(event: Event) -> Result:
    p = event.payload
    return {}, [_membership(event, p["user_id"], {"last_read_seq": p["seq"]})]


_CHANNEL: dict[str, Callable[[Event], Result]] = {
    "ChannelCreated": _created,
    "MemberAdded": _member_added,
    "MemberRoleChanged": _role_changed,
    "MemberRemoved": _member_removed,
    "MemberBanned": _banned,
    "MemberUnbanned": _unbanned,
    "MemberMuted": _muted,
    "MemberUnmuted": _unmuted,
    "MessagePosted": _posted,
    "MessageEdited": _edited,
    "MessageDeleted": _deleted,
    "ReactionAdded": _reaction_added,
    "ReactionRemoved": _reaction_removed,
    "ReadMarkerMoved": _read,
}
