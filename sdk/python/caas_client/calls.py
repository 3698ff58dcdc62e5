"""Every HTTP operation as a :class:`Call`: what to send and how to read the answer.

Built once here, executed by both :class:`caas_client.AsyncClient` and :class:`caas_client.Client`,
so the two clients cannot disagree about a route.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from caas_client import models as m

T = TypeVar("T")
Json = dict[str, Any]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request. ``parse`` turns the JSON answer into ``T``; ``reads`` marks a query that takes
    ``min_position`` (the client adds its own last write's position: read your writes)."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Json | None = None
    query: Mapping[str, str | int] = field(default_factory=dict)
    reads: bool = False
    idempotency_key: str | None = None


def model(cls: type[BaseModel]) -> Callable[[Any], Any]:
    return cls.model_validate


def seg(value: str) -> str:
    """A path segment, escaped (ids are restricted by the server; emoji are not)."""
    return quote(value, safe="")


def params(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}


def drop_none(**values: Any) -> Json:
    return {k: v for k, v in values.items() if v is not None}


# --- tenant administration (API key) -----------------------------------------------------------
def put_user(user_id: str, name: str, metadata: Json | None = None) -> Call[m.UserWritten]:
    return Call("PUT", f"/v1/users/{seg(user_id)}", model(m.UserWritten), drop_none(name=name, metadata=metadata))


def create_token(user_id: str, ttl_seconds: int | None = None) -> Call[m.Token]:
    return Call("POST", f"/v1/users/{seg(user_id)}/tokens", model(m.Token), drop_none(ttl_seconds=ttl_seconds))


def create_api_key(name: str | None = None) -> Call[m.ApiKeyCreated]:
    return Call("POST", "/v1/api-keys", model(m.ApiKeyCreated), drop_none(name=name))


def revoke_api_key(key_id: str) -> Call[m.Written]:
    return Call("DELETE", f"/v1/api-keys/{seg(key_id)}", model(m.Written))


def rotate_signing_key() -> Call[m.SigningKeyRotated]:
    return Call("POST", "/v1/signing-keys", model(m.SigningKeyRotated))


def list_events(after_position: int | None = None, limit: int | None = None, types: str | None = None) -> Call[Json]:
    query = params(after_position=after_position, limit=limit, types=types)
    return Call("GET", "/v1/events", dict, query=query, reads=True)


# --- channels -------------------------------------------------------------------------------------
def create_channel(
    members: list[str], channel_id: str | None = None, name: str | None = None, kind: str = "group"
) -> Call[m.ChannelWritten]:
    body = drop_none(channel_id=channel_id, name=name, kind=kind, members=members)
    return Call("POST", "/v1/channels", model(m.ChannelWritten), body)


def get_channel(channel_id: str) -> Call[m.Channel]:
    return Call("GET", f"/v1/channels/{seg(channel_id)}", model(m.Channel), reads=True)


def list_channels(limit: int | None = None, after: str | None = None) -> Call[Json]:
    return Call("GET", "/v1/channels", dict, query=params(limit=limit, after=after), reads=True)


def add_member(channel_id: str, user_id: str, role: str | None = None) -> Call[m.ChannelWritten]:
    body = drop_none(user_id=user_id, role=role)
    return Call("POST", f"/v1/channels/{seg(channel_id)}/members", model(m.ChannelWritten), body)


def remove_member(channel_id: str, user_id: str) -> Call[m.ChannelWritten]:
    return Call("DELETE", f"/v1/channels/{seg(channel_id)}/members/{seg(user_id)}", model(m.ChannelWritten))


# --- messages -------------------------------------------------------------------------------------
def post_message(channel_id: str, body: Json) -> Call[m.MessageWritten]:
    return Call("POST", f"/v1/channels/{seg(channel_id)}/messages", model(m.MessageWritten), body)


def edit_message(channel_id: str, message_id: str, text: str) -> Call[m.MessageWritten]:
    path = f"/v1/channels/{seg(channel_id)}/messages/{seg(message_id)}"
    return Call("PATCH", path, model(m.MessageWritten), {"text": text})


def delete_message(channel_id: str, message_id: str) -> Call[m.MessageWritten]:
    return Call("DELETE", f"/v1/channels/{seg(channel_id)}/messages/{seg(message_id)}", model(m.MessageWritten))


def messages(
    channel_id: str, before_seq: int | None = None, after_seq: int | None = None, limit: int | None = None
) -> Call[m.MessagePage]:
    query = params(before_seq=before_seq, after_seq=after_seq, limit=limit)
    return Call("GET", f"/v1/channels/{seg(channel_id)}/messages", model(m.MessagePage), query=query, reads=True)


def thread(channel_id: str, message_id: str, limit: int | None = None) -> Call[m.Thread]:
    path = f"/v1/channels/{seg(channel_id)}/messages/{seg(message_id)}/thread"
    return Call("GET", path, model(m.Thread), query=params(limit=limit), reads=True)


def add_reaction(channel_id: str, message_id: str, emoji: str, user_id: str | None = None) -> Call[m.MessageWritten]:
    path = f"/v1/channels/{seg(channel_id)}/messages/{seg(message_id)}/reactions"
    return Call("POST", path, model(m.MessageWritten), drop_none(emoji=emoji, user_id=user_id))


def remove_reaction(channel_id: str, message_id: str, emoji: str, user_id: str | None = None) -> Call[m.MessageWritten]:
    path = f"/v1/channels/{seg(channel_id)}/messages/{seg(message_id)}/reactions/{seg(emoji)}"
    return Call("DELETE", path, model(m.MessageWritten), query=params(user_id=user_id))


def mark_read(channel_id: str, seq: int, user_id: str | None = None) -> Call[m.ChannelWritten]:
    body = drop_none(seq=seq, user_id=user_id)
    return Call("POST", f"/v1/channels/{seg(channel_id)}/read", model(m.ChannelWritten), body)


def typing(channel_id: str, user_id: str | None = None) -> Call[m.TypingDelivered]:
    body = drop_none(user_id=user_id)
    return Call("POST", f"/v1/channels/{seg(channel_id)}/typing", model(m.TypingDelivered), body)


# --- presence -------------------------------------------------------------------------------------
PRESENCE_IDS_PER_CALL = 100  # the server's limit on user_ids per GET /v1/presence


def presence_calls(user_ids: list[str]) -> list[Call[dict[str, m.UserPresence]]]:
    """As many presence calls as ``user_ids`` needs, each within the server's limit."""
    ids = list(dict.fromkeys(user_ids))
    return [presence(ids[i : i + PRESENCE_IDS_PER_CALL]) for i in range(0, len(ids), PRESENCE_IDS_PER_CALL)]


def presence(user_ids: list[str]) -> Call[dict[str, m.UserPresence]]:
    def parse(data: Any) -> dict[str, m.UserPresence]:
        return {uid: m.UserPresence.model_validate(p) for uid, p in data.items()}

    return Call("GET", "/v1/presence", parse, query={"user_ids": ",".join(user_ids)})


def channel_presence(channel_id: str) -> Call[m.ChannelPresence]:
    return Call("GET", f"/v1/channels/{seg(channel_id)}/presence", model(m.ChannelPresence))


# --- pagination -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pager(Generic[T]):
    """A paged listing: ``first`` is the first page's call, ``step`` reads a page's items and the
    call of the next page (``None`` at the end)."""

    first: Call[Any]
    step: Callable[[Any], tuple[list[T], Call[Any] | None]]


def history(channel_id: str, after_seq: int = 0, limit: int | None = None) -> Pager[m.Message]:
    """The channel's top-level messages, oldest first, from ``after_seq``."""

    def step(page: m.MessagePage) -> tuple[list[m.Message], Call[Any] | None]:
        nxt = page.next_after_seq
        return page.messages, None if nxt is None else messages(channel_id, after_seq=nxt, limit=limit)

    return Pager(messages(channel_id, after_seq=after_seq, limit=limit), step)


def history_backwards(channel_id: str, before_seq: int | None = None, limit: int | None = None) -> Pager[m.Message]:
    """The channel's top-level messages, newest first, from the head or ``before_seq``."""

    def step(page: m.MessagePage) -> tuple[list[m.Message], Call[Any] | None]:
        nxt = page.next_before_seq
        return page.messages, None if nxt is None else messages(channel_id, before_seq=nxt, limit=limit)

    return Pager(messages(channel_id, before_seq=before_seq, limit=limit), step)


def channels(limit: int | None = None) -> Pager[m.Channel]:
    """The user's channels, or (with an API key) all of the tenant's, page by page."""

    def step(page: Json) -> tuple[list[m.Channel], Call[Any] | None]:
        items = [m.Channel.model_validate(c) for c in page["channels"]]
        nxt = page.get("next_after")
        return items, None if nxt is None else list_channels(limit=limit, after=nxt)

    return Pager(list_channels(limit=limit), step)


def events(after_position: int = 0, limit: int | None = None, types: list[str] | None = None) -> Pager[m.EventOut]:
    """The tenant's events in log order (API key)."""
    kinds = ",".join(types) if types else None

    def step(page: Json) -> tuple[list[m.EventOut], Call[Any] | None]:
        items = [m.EventOut.model_validate(e) for e in page["events"]]
        nxt = page.get("next_after_position")
        return items, None if nxt is None or not items else list_events(nxt, limit, kinds)

    return Pager(list_events(after_position, limit, kinds), step)
