"""The tenant aggregate: a SaaS customer and its API keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain import errors, policy
from domain.base import Command, Decision, Unchanged
from domain.events import (
    AllowedOriginsSet,
    ApiKeyIssued,
    ApiKeyRevoked,
    ConsoleSessionClosed,
    ConsoleSessionOpened,
    DomainEvent,
    PolicyDeleted,
    PolicySet,
    RetentionSet,
    SigningKeyRotated,
    TenantRegistered,
)
from domain.retention import SetRetention, decide_retention

FIRST_SIGNING_KEY = "v1"
# open portal sessions per API key: a sign-in past it closes that key's oldest (docs/console.md)
MAX_SESSIONS_PER_KEY = 20


class RegisterTenant(Command):
    name: str
    registered_at: str | None = None
    key_id: str
    key_hash: str
    key_name: str = "default"


class IssueApiKey(Command):
    key_id: str
    key_hash: str
    name: str = "default"


class RevokeApiKey(Command):
    key_id: str


class RotateSigningKey(Command):
    """Sign new end-user tokens with a fresh key; the previous key keeps verifying."""


class SetAllowedOrigins(Command):
    origins: list[str]


class OpenConsoleSession(Command):
    """Sign the tenant portal in with API key ``key_id`` (docs/console.md)."""

    session_id: str
    key_id: str
    secret_hash: str
    opened_at: str
    expires_at: str


class CloseConsoleSession(Command):
    """Sign the portal out: the session stops authenticating at once."""

    session_id: str


class SetPolicy(Command):
    """Create or replace an ABAC policy (docs/abac.md)."""

    policy_id: str
    effect: str = "deny"
    actions: list[str]
    condition: Any = True
    description: str = ""


class DeletePolicy(Command):
    policy_id: str


@dataclass(slots=True)
class ApiKey:
    key_id: str
    name: str
    key_hash: str
    revoked: bool = False
    issued_seq: int = 0
    revoked_seq: int = 0


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    key_id: str
    secret_hash: str
    expires_at: str  # RFC 3339 as domain.base.format_time writes it: compared as strings


@dataclass(slots=True)
class TenantState:
    version: int = 0
    name: str | None = None
    keys: dict[str, ApiKey] = field(default_factory=dict)
    signing_keys: list[str] = field(default_factory=lambda: [FIRST_SIGNING_KEY])  # newest first
    origins: frozenset[str] = frozenset()
    origins_seq: int = 0
    registered_at: str | None = None
    sessions: dict[str, ConsoleSession] = field(default_factory=dict)  # open portal sessions
    # each key's open session ids, oldest first: at most MAX_SESSIONS_PER_KEY, so evolving stays cheap
    key_sessions: dict[str, dict[str, bool]] = field(default_factory=dict)
    policies: dict[str, policy.Policy] = field(default_factory=dict)  # ABAC (docs/abac.md)
    policy_seqs: dict[str, int] = field(default_factory=dict)  # each policy's last PolicySet or PolicyDeleted
    ordered_policies: list[policy.Policy] = field(default_factory=list)  # by policy_id: as evaluation judges them
    retention_days: int | None = None  # the tenant's default retention (docs/retention.md); None: forever
    retention_seq: int = 0

    @property
    def verifying_keys(self) -> list[str]:
        """The key ids whose tokens verify: the current one and the one before it."""
        return self.signing_keys[:2]

    @property
    def exists(self) -> bool:
        return self.name is not None

    def active_keys(self) -> list[ApiKey]:
        return [k for k in self.keys.values() if not k.revoked]


def decide(state: TenantState, command: Command) -> Decision:
    match command:
        case RegisterTenant():
            if state.exists:
                raise errors.Conflict("the tenant is already registered")
            return [
                TenantRegistered(name=command.name, registered_at=command.registered_at),
                ApiKeyIssued(key_id=command.key_id, name=command.key_name, key_hash=command.key_hash),
            ]
        case IssueApiKey():
            _require(state)
            return [ApiKeyIssued(key_id=command.key_id, name=command.name, key_hash=command.key_hash)]
        case RevokeApiKey():
            _require(state)
            key = state.keys.get(command.key_id)
            if key is None:
                raise errors.ApiKeyNotFound(f"no API key {command.key_id!r} in this tenant", key_id=command.key_id)
            if key.revoked:
                return Unchanged(key.revoked_seq)
            if len(state.active_keys()) == 1:
                raise errors.Conflict(
                    "this is the tenant's last active API key; issue a new one with POST /v1/api-keys "
                    "before revoking it",
                    key_id=command.key_id,
                )
            return [ApiKeyRevoked(key_id=command.key_id)]
        case RotateSigningKey():
            _require(state)
            return [SigningKeyRotated(kid=f"v{len(state.signing_keys) + 1}")]
        case SetAllowedOrigins():
            _require(state)
            if frozenset(command.origins) == state.origins and state.origins_seq:
                return Unchanged(state.origins_seq)
            return [AllowedOriginsSet(origins=sorted(set(command.origins)))]
        case OpenConsoleSession():
            _require(state)
            key = state.keys.get(command.key_id)
            if key is None or key.revoked:
                raise errors.ApiKeyNotFound(f"no active API key {command.key_id!r}", key_id=command.key_id)
            if command.expires_at <= command.opened_at:
                raise errors.Invalid("a console session must expire after it opens")
            if command.session_id in state.sessions:
                raise errors.Conflict("that session id is taken", session_id=command.session_id)
            return [
                ConsoleSessionOpened(
                    session_id=command.session_id,
                    key_id=command.key_id,
                    secret_hash=command.secret_hash,
                    opened_at=command.opened_at,
                    expires_at=command.expires_at,
                )
            ]
        case CloseConsoleSession():
            _require(state)
            if command.session_id not in state.sessions:
                raise errors.SessionNotFound("no open console session with that id; sign in again")
            return [ConsoleSessionClosed(session_id=command.session_id)]
        case SetPolicy():
            _require(state)
            return _set_policy(state, command)
        case DeletePolicy():
            _require(state)
            if command.policy_id not in state.policies:
                if command.policy_id in state.policy_seqs:  # deleted already: a repeat records nothing
                    return Unchanged(state.policy_seqs[command.policy_id])
                raise errors.PolicyNotFound(f"no policy {command.policy_id!r}", policy_id=command.policy_id)
            return [PolicyDeleted(policy_id=command.policy_id)]
        case SetRetention():
            _require(state)
            return decide_retention(state.retention_days, state.retention_seq, command)
    raise TypeError(f"not a tenant command: {type(command).__name__}")


def evolve(state: TenantState, event: DomainEvent) -> TenantState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    match event:
        case TenantRegistered():
            state.name, state.registered_at = event.name, event.registered_at
        case ApiKeyIssued():
            state.keys[event.key_id] = ApiKey(event.key_id, event.name, event.key_hash, issued_seq=state.version)
        case ApiKeyRevoked():
            key = state.keys[event.key_id]
            key.revoked = True
            key.revoked_seq = state.version
        case SigningKeyRotated():
            state.signing_keys.insert(0, event.kid)
        case AllowedOriginsSet():
            state.origins = frozenset(event.origins)
            state.origins_seq = state.version
        case ConsoleSessionOpened():
            # this key's sessions that expired before this one opened are forgotten, and past the cap
            # its oldest is closed: work bounded by MAX_SESSIONS_PER_KEY, whatever the history
            mine = state.key_sessions.setdefault(event.key_id, {})
            for sid in [sid for sid in mine if state.sessions[sid].expires_at <= event.opened_at]:
                del mine[sid], state.sessions[sid]
            state.sessions[event.session_id] = ConsoleSession(event.key_id, event.secret_hash, event.expires_at)
            mine[event.session_id] = True
            while len(mine) > MAX_SESSIONS_PER_KEY:
                oldest = next(iter(mine))
                del mine[oldest], state.sessions[oldest]
            _forget_expired(state, event.opened_at)  # and the other keys' too, oldest first
        case ConsoleSessionClosed():
            closed = state.sessions.pop(event.session_id, None)
            if closed is not None:
                state.key_sessions.get(closed.key_id, {}).pop(event.session_id, None)
        case PolicySet():
            state.policies[event.policy_id] = policy.parse_policy(
                event.policy_id, event.effect, event.actions, event.condition, event.description, known_actions=False
            )
            state.policy_seqs[event.policy_id] = state.version
            state.ordered_policies = [state.policies[k] for k in sorted(state.policies)]
        case PolicyDeleted():
            state.policies.pop(event.policy_id, None)
            state.policy_seqs[event.policy_id] = state.version
            state.ordered_policies = [state.policies[k] for k in sorted(state.policies)]
        case RetentionSet():
            state.retention_days, state.retention_seq = event.days, state.version
    return state


def _set_policy(state: TenantState, command: SetPolicy) -> Decision:
    parsed = policy.parse_policy(
        command.policy_id, command.effect, command.actions, command.condition, command.description
    )
    known = state.policies.get(command.policy_id)
    if known is not None and known.document() == parsed.document():
        return Unchanged(state.policy_seqs[command.policy_id])
    if known is None and len(state.policies) >= policy.MAX_POLICIES:
        raise errors.TooManyPolicies(
            f"a tenant has at most {policy.MAX_POLICIES} policies; delete one first", limit=policy.MAX_POLICIES
        )
    document = parsed.document()
    return [
        PolicySet(
            policy_id=parsed.policy_id,
            effect=parsed.effect,
            actions=document["actions"],
            condition=parsed.condition,
            description=parsed.description,
        )
    ]


def _forget_expired(state: TenantState, now: str) -> None:
    """Forget the tenant's sessions, oldest first, while they have expired at ``now``, whatever
    their key: they last alike, so the ones after the first still open are too. Each session is
    forgotten once, so no history makes a sign-in cost more than its own."""
    while state.sessions:
        sid, session = next(iter(state.sessions.items()))
        if session.expires_at > now:
            return
        del state.sessions[sid]
        state.key_sessions.get(session.key_id, {}).pop(sid, None)


def _require(state: TenantState) -> None:
    if not state.exists:
        raise errors.TenantNotFound("the tenant does not exist")
