"""Named domain rules.

Every rule the domain enforces has its own error class. Each carries a ``category``
(``forbidden``, ``not_found``, ``conflict``, ``invalid_request``) that the API maps to an
HTTP status, a ``rule`` name that clients can branch on, and a message that says how to
fix the request.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

Category = Literal["forbidden", "not_found", "conflict", "invalid_request", "policy_denied"]
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


class DeviceNotFound(NotFound):
    rule = "device_not_found"


class TooManyDevices(Conflict):
    rule = "too_many_devices"


class PrekeyReused(Conflict):
    rule = "prekey_reused"


class NoPrekeysLeft(Conflict):
    """Every named device's pool of one-time prekeys is empty (the API answers the bundle with
    ``one_time_prekey: null`` instead)."""

    rule = "no_one_time_prekeys"


class PlaintextInE2EChannel(Invalid):
    rule = "plaintext_in_e2e_channel"


class NotE2EChannel(Invalid):
    rule = "e2e_in_plain_channel"


class DuplicatePrekeyId(Invalid):
    rule = "duplicate_prekey_id"


class TooManyPrekeys(Invalid):
    rule = "too_many_prekeys"


class PolicyInvalid(Invalid):
    """A policy document the condition language refuses (docs/abac.md)."""

    rule = "invalid_policy"


class TooManyPolicies(Invalid):
    rule = "too_many_policies"


class PolicyNotFound(NotFound):
    rule = "policy_not_found"


class PolicyDenied(DomainError):
    """A tenant policy refuses the request (docs/abac.md); ``details`` name the policy."""

    category = "policy_denied"
    rule = "policy_denied"


class UserIsErased(Conflict):
    """The user was erased (UserErased): their stream takes no new personal data (API: 410 user_erased)."""

    rule = "user_erased"


class LegalHold(Conflict):
    """A legal hold suspends erasure and retention (API: 409 legal_hold)."""

    rule = "legal_hold"
