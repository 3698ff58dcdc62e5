"""ABAC enforcement: a tenant's policies judged for every command and every read.

:class:`PolicyGate` gathers a request's attributes (docs/abac.md: the acting user's id,
metadata and role in the channel, the user a command targets, the channel's id, kind, e2e
flag and name, the action, the UTC time) from the command side's reads, and raises
:class:`~domain.errors.PolicyDenied` if a policy refuses. The reads are the node's own view:
the aggregate cache on the embedded backend, the replica of the aggregates an API node keeps
from the event topic on the Kafka backend, so a policy recorded on any node applies on every
node as soon as its event arrives, and a tenant without policies costs one cached read.

:class:`PolicyCommands` is the gate around the command side (composed in api/bootstrap.py):
every command of a tenant key or an end user is judged before it is decided (a command its
aggregate's own rules refuse gets that refusal first); the platform admin's and CAAS's own
commands (``system:…``) are not.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from commands.repository import aggregate_of
from commands.service import CommandEnvelope, Commands, CommandsAround, Outcome
from domain import channel as ch
from domain import errors, policy, user
from domain.base import Command, format_time
from domain.channel import ChannelState
from domain.events import StreamId
from domain.tenant import TenantState

POLICED = ("user", "tenant")  # actor kinds policies apply to

# The user a command acts as, when a tenant key sends it on a user's behalf (a token's user
# acts as itself), and the user a command is about.
_ACTING: dict[type[Command], str] = {
    ch.PostMessage: "author_id", ch.AddReaction: "user_id", ch.RemoveReaction: "user_id", ch.MoveReadMarker: "user_id",
}  # fmt: skip
_TARGET: dict[type[Command], str] = {
    ch.AddMember: "user_id", ch.RemoveMember: "user_id", ch.MuteMember: "user_id", ch.UnmuteMember: "user_id",
    ch.BanMember: "user_id", ch.UnbanMember: "user_id",
}  # fmt: skip


def _actor(label: str | None) -> tuple[str, str] | None:
    """``(kind, id)`` of an actor label a policy judges (``user:u1``, ``tenant:k1``), else ``None``."""
    if label is None:
        return None
    kind, _, ident = label.partition(":")
    return (kind, ident) if kind in POLICED else None


class PolicyGate:
    """Judges a request against its tenant's policies (see the module's docstring)."""

    def __init__(self, commands: Commands, clock: Callable[[], datetime]) -> None:
        self.commands = commands
        self.clock = clock

    async def check(
        self,
        tenant_id: str,
        kind: str,
        actor_id: str,
        action: str,
        *,
        user_id: str | None = None,
        channel_id: str | None = None,
        channel: ChannelState | dict[str, Any] | None = None,
        target_id: str | None = None,
    ) -> None:
        """Raise :class:`errors.PolicyDenied` if a policy of ``tenant_id`` refuses ``action``.

        ``kind`` / ``actor_id``: the principal (``user`` and its id, or ``tenant`` and its key
        id). ``user_id``: the user a tenant key acts as (a user token acts as itself).
        ``channel``: the channel's state if the caller has it (else it is read by
        ``channel_id``), or its attributes as a command gives them (a channel being created)."""
        tenant: TenantState = await self.commands.tenant(tenant_id)
        if not tenant.ordered_policies or action in policy.EXEMPT_ACTIONS:
            return
        applicable = [p for p in tenant.ordered_policies if p.applies_to(action)]
        if not applicable:
            return
        reads = frozenset().union(*(p.roots for p in applicable))  # gather only what they read
        acting = actor_id if kind == "user" else user_id
        if channel is None and channel_id is not None and ("channel" in reads or "user" in reads):
            channel = await self.commands.channel(tenant_id, channel_id)
        attributes: dict[str, Any] = {"action": action, "principal": {"kind": kind}}
        if "time" in reads:
            attributes["time"] = self._time()
        if acting is not None and "user" in reads:
            attributes["user"] = await self._user(tenant_id, acting, channel)
        if target_id is not None and "target" in reads:
            target = await self.commands.user(tenant_id, target_id)
            attributes["target"] = {"id": target_id, "metadata": target.metadata}
        if isinstance(channel, ChannelState):
            if channel.exists:
                attributes["channel"] = {"id": channel_id, "kind": channel.kind, "e2e": channel.e2e,
                                         "name": channel.name}  # fmt: skip
        elif channel is not None:
            attributes["channel"] = channel
        denial = policy.evaluate(applicable, action, attributes, applicable=True)
        if denial is not None:
            raise errors.PolicyDenied(
                f"policy {denial.policy_id!r} refuses {action}"
                + (" (no allow policy of the action holds)" if denial.effect == "allow" else ""),
                policy_id=denial.policy_id,
                action=action,
                effect=denial.effect,
                policy_ids=list(denial.policy_ids),
            )

    async def _user(
        self, tenant_id: str, user_id: str, channel: ChannelState | dict[str, Any] | None
    ) -> dict[str, Any]:
        state: user.UserState = await self.commands.user(tenant_id, user_id)
        found: dict[str, Any] = {"id": user_id, "metadata": state.metadata}
        if isinstance(channel, ChannelState):
            role = channel.members.get(user_id)
            if role is not None:
                found["role"] = role
        return found

    def _time(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "hour": now.hour,
            "minute": now.minute,
            "weekday": now.isoweekday(),
            "date": now.date().isoformat(),
            "iso": format_time(now),
        }

    async def check_command(self, envelope: CommandEnvelope) -> None:
        """Judge a command by its envelope (see :class:`PolicyCommands`)."""
        actor = _actor(envelope.actor)
        if actor is None:
            return
        command = envelope.command
        action = policy.action_name(type(command))
        stream = StreamId.parse(envelope.stream)
        channel: ChannelState | dict[str, Any] | None = None
        channel_id = None
        if stream.kind == "channel":
            channel_id = stream.id
            if isinstance(command, ch.CreateChannel):
                channel = {"id": stream.id, "kind": command.kind, "e2e": command.e2e, "name": command.name}
        target = _field(command, _TARGET)
        if stream.kind == "user":
            target = stream.id  # registering or updating a user
        await self.check(
            envelope.tenant_id,
            actor[0],
            actor[1],
            action,
            user_id=_field(command, _ACTING),
            channel_id=channel_id,
            channel=channel,
            target_id=target,
        )


def _field(command: Command, fields: dict[type[Command], str]) -> str | None:
    name = fields.get(type(command))
    return None if name is None else str(getattr(command, name))


class PolicyCommands(CommandsAround):
    """The command side behind the tenant's ABAC policies: a refused command is never decided."""

    def __init__(self, inner: Commands, gate: PolicyGate) -> None:
        super().__init__(inner)
        self.gate = gate

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        try:
            await self.gate.check_command(envelope)
        except errors.PolicyDenied:
            await self._rules_first(envelope)
            raise
        return await self.inner.execute(envelope)

    async def _rules_first(self, envelope: CommandEnvelope) -> None:
        """RBAC and the aggregate's own rules answer first: a refused command that its aggregate
        would refuse anyway (not a member, not the author, no such channel…) gets that refusal,
        as it would without policies. Only on a denial: ``decide`` is pure, nothing is recorded."""
        state = await self.inner.state(envelope.tenant_id, envelope.stream)
        aggregate_of(envelope.stream).decide(state, envelope.command)
