"""Named domain rules.

Every rule the domain enforces has its own error class. Each carries a ``category``
(``forbidden``, ``not_found``, ``conflict``, ``invalid_request``) that the API maps to an
HTTP status, a ``rule`` name that clients can branch on, and a message that says how to
fix the request.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

Category = Literal["forbidden", "not_found", "conflict", "invalid_request"]
CATEGORIES: tuple[Category, ...] = get_args(Category)


class DomainError(Exception):
    """A command broke a rule of the domain; nothing was recorded."""

    category: ClassVar[Category] = "conflict"
    rule: ClassVar[str] = "domain_rule"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Forbidden(DomainError):
    category = "forbidden"
    rule = "forbidden"


class NotFound(DomainError):
    category = "not_found"
    rule = "not_found"


class Conflict(DomainError):
    category = "conflict"
    rule = "conflict"


class Invalid(DomainError):
    category = "invalid_request"
    rule = "invalid_request"


class TenantNotFound(NotFound):
    rule = "tenant_not_found"


class ApiKeyNotFound(NotFound):
    rule = "api_key_not_found"


class SessionNotFound(NotFound):
    rule = "session_not_found"


class UserNotFound(NotFound):
    rule = "user_not_found"


class ChannelNotFound(NotFound):
    rule = "channel_not_found"


class MessageNotFound(NotFound):
    rule = "message_not_found"


class ReactionNotFound(NotFound):
    rule = "reaction_not_found"


class MemberNotFound(NotFound):
    rule = "member_not_found"


class ChannelAlreadyExists(Conflict):
    rule = "channel_already_exists"


class MessageDeleted(Conflict):
    rule = "message_deleted"


class NotAMember(Forbidden):
    rule = "not_a_member"


class NotChannelAdmin(Forbidden):
    rule = "not_channel_admin"


class NotOwner(Forbidden):
    rule = "not_channel_owner"


class NotAuthor(Forbidden):
    rule = "not_author"


class MemberMuted(Forbidden):
    rule = "member_muted"


class MemberBanned(Forbidden):
    rule = "member_banned"


class DirectChannelMembers(Invalid):
    rule = "direct_channel_members"


class ReservedChannelId(Invalid):
    rule = "reserved_channel_id"


class InvalidParent(Invalid):
    rule = "invalid_parent"


class ReadMarkerAhead(Invalid):
    rule = "read_marker_ahead"


class WebhookNotFound(NotFound):
    rule = "webhook_not_found"


class UserIsErased(Conflict):
    """The user was erased (UserErased): their stream takes no new personal data (API: 410 user_erased)."""

    rule = "user_erased"


class LegalHold(Conflict):
    """A legal hold suspends erasure and retention (API: 409 legal_hold)."""

    rule = "legal_hold"
