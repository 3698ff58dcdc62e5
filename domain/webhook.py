"""The webhook aggregate: one outbound endpoint of a tenant (stream ``webhook:<id>``).

The delivery processor (:mod:`streams.webhooks`) decides to disable an endpoint on what it
saw: :class:`DisableWebhook` names the aggregate version it judged, and a version that moved
since (a PATCH re-enabled or changed the endpoint) makes the decision stale: nothing is
recorded, so a re-enable is never undone by a failure counted before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain import errors
from domain.base import Command, Decision, Unchanged
from domain.events import (
    DomainEvent,
    WebhookDeleted,
    WebhookDisabled,
    WebhookEnabled,
    WebhookRegistered,
    WebhookReplayRequested,
    WebhookSecretRotated,
    WebhookUpdated,
)

# The events an endpoint can subscribe to: what happens in the tenant's channels and to its
# users ("*": all of them). The platform's own records (usage, billing, webhooks) are not sent.
DELIVERABLE: tuple[str, ...] = (
    "ChannelCreated", "MemberAdded", "MemberRoleChanged", "MemberRemoved", "MessagePosted", "MessageEdited",
    "MessageDeleted", "ReactionAdded", "ReactionRemoved", "ReadMarkerMoved", "MemberMuted", "MemberUnmuted",
    "MemberBanned", "MemberUnbanned", "UserRegistered", "UserUpdated", "PresenceChanged",
)  # fmt: skip
ALL = "*"


def subscribed(event_types: list[str]) -> list[str]:
    """The event types an endpoint's ``event_types`` name, in :data:`DELIVERABLE`'s order."""
    return list(DELIVERABLE) if ALL in event_types else [t for t in DELIVERABLE if t in event_types]


class RegisterWebhook(Command):
    url: str
    event_types: list[str]
    description: str = ""


class UpdateWebhook(Command):
    """Change what is given; ``enabled=True`` re-enables a disabled endpoint."""

    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


class DisableWebhook(Command):
    """Disable the endpoint as it was at ``seen_version`` (stale if it changed since)."""

    reason: str
    seen_version: int
    failing_since: str | None = None


class ReplayWebhook(Command):
    from_position: int


class RotateWebhookSecret(Command):
    """Sign with a new secret (the old one is still signed with for a grace period)."""


class DeleteWebhook(Command):
    pass


@dataclass(slots=True)
class WebhookState:
    version: int = 0
    url: str = ""
    event_types: list[str] = field(default_factory=list)
    description: str = ""
    enabled: bool = True
    deleted: bool = False
    changed_seq: int = 0  # the last seq that changed url, types, description or enabled
    deleted_seq: int = 0
    secret_generation: int = 0  # the seq of the last rotation (0: the secret shown at creation)

    @property
    def exists(self) -> bool:
        return self.version > 0 and not self.deleted


def decide(state: WebhookState, command: Command) -> Decision:
    match command:
        case RegisterWebhook():
            if state.version > 0:
                raise errors.Conflict("this webhook endpoint is already registered")
            return [
                WebhookRegistered(url=command.url, event_types=command.event_types, description=command.description)
            ]
        case UpdateWebhook():
            _require(state)
            url = state.url if command.url is None else command.url
            types = state.event_types if command.event_types is None else command.event_types
            description = state.description if command.description is None else command.description
            decided: list[DomainEvent] = []
            if (url, types, description) != (state.url, state.event_types, state.description):
                decided.append(WebhookUpdated(url=url, event_types=types, description=description))
            if command.enabled is True and not state.enabled:
                decided.append(WebhookEnabled())
            elif command.enabled is False and state.enabled:
                decided.append(WebhookDisabled(reason="disabled by the tenant"))
            return decided or Unchanged(state.changed_seq or state.version)
        case DisableWebhook():
            _require(state)
            if not state.enabled:
                return Unchanged(state.changed_seq or state.version)
            if command.seen_version != state.version:  # stale: the endpoint changed since it was judged
                return Unchanged(state.version)
            return [WebhookDisabled(reason=command.reason, failing_since=command.failing_since)]
        case ReplayWebhook():
            _require(state)
            if command.from_position < 0:
                raise errors.Invalid("from_position is 0 or more")
            return [WebhookReplayRequested(from_position=command.from_position)]
        case RotateWebhookSecret():
            _require(state)
            return [WebhookSecretRotated(previous_generation=state.secret_generation)]
        case DeleteWebhook():
            if state.deleted:
                return Unchanged(state.deleted_seq)
            _require(state)
            return [WebhookDeleted()]
    raise TypeError(f"not a webhook command: {type(command).__name__}")


def evolve(state: WebhookState, event: DomainEvent) -> WebhookState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    match event:
        case WebhookRegistered() | WebhookUpdated():
            state.url, state.event_types, state.description = event.url, list(event.event_types), event.description
            state.changed_seq = state.version
        case WebhookEnabled():
            state.enabled, state.changed_seq = True, state.version
        case WebhookDisabled():
            state.enabled, state.changed_seq = False, state.version
        case WebhookSecretRotated():
            state.secret_generation = state.version
        case WebhookDeleted():
            state.deleted, state.deleted_seq = True, state.version
    return state


def _require(state: WebhookState) -> None:
    if not state.exists:
        raise errors.WebhookNotFound("no such webhook endpoint")
