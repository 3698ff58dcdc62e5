"""Reads of the chat read model, shaped as docs/api.md renders them. Backend-neutral: they use
only the :class:`ReadStore` port."""

from __future__ import annotations

from typing import Any, Protocol

from projections.chat import membership_key, message_key
from projections.ports import Doc, DocReader

_HIDDEN = ("_id", "tenant_id", "chday")  # chday: the retention sweeper's handle (projections/chat.py)


def render_message(doc: Doc) -> Doc:
    out = {k: v for k, v in doc.items() if k not in _HIDDEN}
    out["reactions"] = {emoji: users for emoji, users in (doc.get("reactions") or {}).items() if users}
    out.setdefault("edited_at", None)
    out.setdefault("mentions", [])  # a message projected before MessagePosted v2, until a rebuild
    out.setdefault("e2e", None)  # a message projected before e2e envelopes
    return out


class Horizon(Protocol):
    """Where a channel's retention starts (docs/retention.md): messages recorded before it are
    hidden from every query."""

    async def cutoff(self, tenant_id: str, channel_id: str) -> str | None:
        """An RFC 3339 time as ``domain.base.format_time`` writes it; ``None``: nothing is hidden."""
        ...


class Forever:
    """No retention: every message is shown."""

    async def cutoff(self, tenant_id: str, channel_id: str) -> str | None:
        return None


class ChatQueries:
    """Queries over channels, memberships and messages for one store."""

    def __init__(self, store: DocReader, *, receipts_up_to: int = 100, horizon: Horizon | None = None) -> None:
        self.store = store
        self.receipts_up_to = receipts_up_to
        self.horizon: Horizon = horizon or Forever()

    async def _kept(self, tenant_id: str, channel_id: str, flt: dict[str, Any]) -> dict[str, Any]:
        """``flt`` narrowed to the messages the channel's retention still shows."""
        cutoff = await self.horizon.cutoff(tenant_id, channel_id)
        if cutoff is not None:
            flt["created_at"] = {"$gte": cutoff}
        return flt

    async def membership(self, tenant_id: str, channel_id: str, user_id: str) -> Doc | None:
        doc = await self.store.get("memberships", tenant_id, membership_key(channel_id, user_id))
        return doc if doc is not None and doc.get("active") else None

    async def members(self, tenant_id: str, channel_id: str) -> list[dict[str, Any]]:
        docs = await self.store.find(
            "memberships", tenant_id, {"channel_id": channel_id, "active": True}, sort=[("joined_at", 1)]
        )
        return [{"user_id": d["user_id"], "role": d["role"]} for d in docs]

    async def unread_count(self, tenant_id: str, channel_id: str, user_id: str, last_read_seq: int) -> int:
        flt = {
            "channel_id": channel_id,
            "parent_id": None,
            "seq": {"$gt": last_read_seq},
            "author_id": {"$ne": user_id},
            "deleted": False,
        }
        return await self.store.count("messages", tenant_id, await self._kept(tenant_id, channel_id, flt))

    async def member_details(
        self, tenant_id: str, channel_id: str, after: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Everyone who was ever a member of the channel, with moderation state, for the tenant
        portal: all of them (current members first, then the removed and banned), or, given
        ``after`` or ``limit``, a page in user id order after the user ``after``."""
        if after is None and limit is None:
            docs = await self.store.find("memberships", tenant_id, {"channel_id": channel_id}, sort=[("joined_at", 1)])
        else:
            flt: dict[str, Any] = {"channel_id": channel_id}
            if after is not None:
                flt["user_id"] = {"$gt": after}
            docs = await self.store.find("memberships", tenant_id, flt, sort=[("user_id", 1)], limit=limit)
        details = [
            {
                "user_id": d["user_id"],
                "role": d.get("role"),
                "active": bool(d.get("active")),
                "muted": bool(d.get("muted")),
                "muted_until": d.get("muted_until"),
                "banned": bool(d.get("banned")),
                "last_read_seq": d.get("last_read_seq", 0),
            }
            for d in docs
        ]
        return sorted(details, key=lambda m: not m["active"]) if after is None and limit is None else details

    async def users(self, tenant_id: str, prefix: str, after: str | None, limit: int) -> list[Doc]:
        """The tenant's users whose id starts with ``prefix``, in id order, after ``after``."""
        flt: dict[str, Any] = {}
        if prefix:  # ids are ASCII: every id starting with the prefix sorts below prefix + U+10FFFF
            flt["user_id"] = {"$gte": prefix, "$lt": prefix + "\U0010ffff"}
        if after is not None:
            flt.setdefault("user_id", {})["$gt"] = after
        docs = await self.store.find("users", tenant_id, flt, sort=[("user_id", 1)], limit=limit)
        return [
            {
                "user_id": d["user_id"],
                "name": d.get("name"),
                "metadata": d.get("metadata") or {},
                "created_at": d.get("created_at"),
                "updated_at": d.get("updated_at"),
                **({"erased": True} if d.get("erased") else {}),
            }
            for d in docs
        ]

    async def channel(self, tenant_id: str, channel_id: str, user_id: str | None) -> Doc | None:
        doc = await self.store.get("channels", tenant_id, channel_id)
        if doc is None or "kind" not in doc:
            return None
        return await self._render_channel(tenant_id, doc, user_id)

    async def _render_channel(self, tenant_id: str, doc: Doc, user_id: str | None) -> Doc:
        cid = doc["channel_id"]
        last = None
        if doc.get("last_message_seq"):
            found = await self.store.find(
                "messages", tenant_id, {"channel_id": cid, "seq": doc["last_message_seq"]}, limit=1
            )
            cutoff = await self.horizon.cutoff(tenant_id, cid)
            last = render_message(found[0]) if found and (cutoff is None or found[0]["created_at"] >= cutoff) else None
        unread = None
        if user_id is not None:
            membership = await self.membership(tenant_id, cid, user_id)
            last_read = membership.get("last_read_seq", 0) if membership else 0
            unread = await self.unread_count(tenant_id, cid, user_id, last_read)
        return {
            "channel_id": cid,
            "name": doc.get("name"),
            "kind": doc.get("kind"),
            "e2e": doc.get("e2e", False),
            "created_by": doc.get("created_by"),
            "created_at": doc.get("created_at"),
            "members": await self.members(tenant_id, cid),
            "head_seq": doc.get("head_seq", 0),
            "last_message": last,
            "last_message_at": doc.get("last_message_at"),
            "unread_count": unread,
        }

    async def channels_of_user(self, tenant_id: str, user_id: str, limit: int) -> list[Doc]:
        memberships = await self.store.find("memberships", tenant_id, {"user_id": user_id, "active": True})
        docs = await self.store.find(
            "channels", tenant_id, {"channel_id": {"$in": [m["channel_id"] for m in memberships]}}
        )
        docs.sort(key=lambda d: d.get("last_message_at") or d.get("created_at") or "", reverse=True)
        return [await self._render_channel(tenant_id, d, user_id) for d in docs[:limit]]

    async def contacts(self, tenant_id: str, user_id: str) -> set[str]:
        """The users who share a channel with ``user_id`` now (not the user themself)."""
        memberships = await self.store.find("memberships", tenant_id, {"user_id": user_id, "active": True})
        if not memberships:
            return set()
        channels = [m["channel_id"] for m in memberships]
        others = await self.store.find("memberships", tenant_id, {"channel_id": {"$in": channels}, "active": True})
        return {m["user_id"] for m in others} - {user_id}

    async def channels_ever_of(self, tenant_id: str, user_id: str) -> list[str]:
        """The channels ``user_id`` is or was a member of (removed, left or banned since)."""
        memberships = await self.store.find("memberships", tenant_id, {"user_id": user_id})
        return sorted({m["channel_id"] for m in memberships})

    async def channels_of_tenant(self, tenant_id: str, after: str | None, limit: int) -> list[Doc]:
        flt: dict[str, Any] = {"kind": {"$ne": None}}
        if after is not None:
            flt["channel_id"] = {"$gt": after}
        docs = await self.store.find("channels", tenant_id, flt, sort=[("channel_id", 1)], limit=limit)
        return [await self._render_channel(tenant_id, d, None) for d in docs]

    async def messages(
        self,
        tenant_id: str,
        channel_id: str,
        *,
        before_seq: int | None,
        after_seq: int | None,
        limit: int,
    ) -> tuple[list[Doc], int | None]:
        """A page of the channel's timeline (top-level messages) and the cursor to the next."""
        flt = await self._kept(tenant_id, channel_id, {"channel_id": channel_id, "parent_id": None})
        if after_seq is not None:
            flt["seq"] = {"$gt": after_seq}
            if before_seq is not None:
                flt["seq"]["$lt"] = before_seq
            docs = await self.store.find("messages", tenant_id, flt, sort=[("seq", 1)], limit=limit + 1)
        else:
            if before_seq is not None:
                flt["seq"] = {"$lt": before_seq}
            docs = await self.store.find("messages", tenant_id, flt, sort=[("seq", -1)], limit=limit + 1)
        more = len(docs) > limit
        docs = docs[:limit]
        cursor = docs[-1]["seq"] if more and docs else None
        return await self._with_receipts(tenant_id, channel_id, [render_message(d) for d in docs]), cursor

    async def _with_receipts(self, tenant_id: str, channel_id: str, messages: list[Doc]) -> list[Doc]:
        """Add ``seen_by`` (members whose read marker passed the message) in small channels."""
        if not messages:
            return messages
        marks = await self.store.find(
            "memberships", tenant_id, {"channel_id": channel_id, "active": True}, limit=self.receipts_up_to + 1
        )
        if len(marks) > self.receipts_up_to:
            return messages
        for message in messages:
            message["seen_by"] = sorted(
                m["user_id"]
                for m in marks
                if m.get("last_read_seq", 0) >= message["seq"] and m["user_id"] != message["author_id"]
            )
        return messages

    async def message(self, tenant_id: str, channel_id: str, message_id: str) -> Doc | None:
        doc = await self.store.get("messages", tenant_id, message_key(channel_id, message_id))
        cutoff = await self.horizon.cutoff(tenant_id, channel_id)
        if doc is None or (cutoff is not None and doc["created_at"] < cutoff):
            return None
        return render_message(doc)

    async def thread(self, tenant_id: str, channel_id: str, message_id: str, limit: int) -> list[Doc]:
        flt = await self._kept(tenant_id, channel_id, {"channel_id": channel_id, "parent_id": message_id})
        docs = await self.store.find("messages", tenant_id, flt, sort=[("seq", 1)], limit=limit)
        return await self._with_receipts(tenant_id, channel_id, [render_message(d) for d in docs])
