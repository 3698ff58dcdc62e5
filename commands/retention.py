"""Retention at run time: each channel's effective policy, and the sweeper that shreds past it.

:class:`RetentionPolicies` answers a channel's :class:`~domain.retention.Retention` from the
aggregates (the tenant's default, the channel's override, the legal holds of the channel and of
everyone who ever was its member) and is the queries' :class:`~projections.queries.Horizon`.

:class:`RetentionSweeper` destroys the keys of the channel-days past their retention through
the key store, then records ``ChannelDayShredded`` on the channel's stream. Destroying first:
a crash between the two leaves a destroyed key whose record the next pass writes, never a
record of a key that still exists. Every node may sweep: destroying twice is harmless and the
channel's decider records each day once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog

from commands.keys import KeyStore, channel_day_key_id
from commands.service import CommandEnvelope, Commands
from domain import retention
from domain.base import format_time
from domain.channel import ChannelState
from domain.errors import DomainError
from domain.events import stream_name
from domain.retention import Retention, ShredChannelDay

SWEEPER = "system:retention"  # the actor of the sweeper's records
DAY_KEY_PREFIX = "chday:"

log = structlog.get_logger("caas.retention")


class DayKeys:
    """The channel-day keys of a key store (:mod:`commands.keys`), as the sweeper sees them.

    ``destroy`` is how a key is destroyed: the node's :class:`~commands.keys.Keyring` (which
    also forgets it at once), by default the store itself."""

    def __init__(self, store: KeyStore, destroy: Callable[[str, str], Awaitable[bool]] | None = None) -> None:
        self.store = store
        self.destroy = destroy or store.destroy

    async def channel_days(self, tenant_id: str) -> list[tuple[str, str]]:
        """``(channel_id, day)`` of each ``chday:<channel_id>:<day>`` key not destroyed yet."""
        found: list[tuple[str, str]] = []
        after: tuple[str, str] | None = None
        while keys := await self.store.list_keys(tenant_id, prefix=DAY_KEY_PREFIX, after=after):
            for key in keys:
                if not key.destroyed:  # ids never hold ':' (domain.base.ID_PATTERN): the day is the last part
                    channel_id, _, day = key.key_id.removeprefix(DAY_KEY_PREFIX).rpartition(":")
                    found.append((channel_id, day))
            after = (keys[-1].tenant_id, keys[-1].key_id)
        return found


class RetentionPolicies:
    """Each channel's effective retention, judged now (``clock``)."""

    def __init__(self, commands: Commands, clock: Callable[[], datetime]) -> None:
        self.commands = commands
        self.clock = clock

    async def retention(self, tenant_id: str, channel_id: str) -> Retention:
        tenant = await self.commands.tenant(tenant_id)
        channel = await self.commands.channel(tenant_id, channel_id)
        policy = retention.effective(tenant.retention_days, channel.retention_days, channel.legal_hold)
        if policy.days is None or policy.held:
            return policy
        return Retention(policy.days, await self.member_held(tenant_id, channel))

    async def member_held(self, tenant_id: str, channel: ChannelState) -> bool:
        """Whether a legal hold is on anyone who is or was a member of the channel (their
        messages are among its days). Asked only of channels with a retention."""
        for user_id in {*channel.member_seq, *channel.banned}:
            if (await self.commands.user(tenant_id, user_id)).legal_hold:
                return True
        return False

    async def cutoff(self, tenant_id: str, channel_id: str) -> str | None:
        """Messages recorded before this time are hidden (``projections.queries.Horizon``)."""
        cutoff = (await self.retention(tenant_id, channel_id)).cutoff(self.clock())
        return None if cutoff is None else format_time(cutoff)


@dataclass(frozen=True, slots=True)
class Shredded:
    tenant_id: str
    channel_id: str
    day: str


EraseDay = Callable[[str, str, str, int], Awaitable[None]]
"""``(tenant_id, channel_id, day, position)``: overwrite the read models' copies of the day's
texts once they applied ``position`` (the ``ChannelDayShredded``)."""


class RetentionSweeper:
    """One pass over the tenants' channel-day keys: destroy those past their retention."""

    def __init__(self, policies: RetentionPolicies, keys: DayKeys, erase: EraseDay | None = None) -> None:
        self.policies = policies
        self.keys = keys
        self.erase = erase

    async def sweep(self, tenants: Iterable[str]) -> list[Shredded]:
        """Shred every due channel-day of ``tenants``; what was shredded, in order."""
        done: list[Shredded] = []
        for tenant_id in tenants:
            async for item in self._tenant(tenant_id):
                done.append(item)
        return done

    async def _tenant(self, tenant_id: str) -> AsyncIterator[Shredded]:
        by_channel: dict[str, list[str]] = {}
        for channel_id, day in await self.keys.channel_days(tenant_id):
            by_channel.setdefault(channel_id, []).append(day)
        for channel_id, days in sorted(by_channel.items()):
            for day in await self.due(tenant_id, channel_id, days):
                if await self._shred(tenant_id, channel_id, day):
                    yield Shredded(tenant_id, channel_id, day)

    async def due(self, tenant_id: str, channel_id: str, days: list[str]) -> list[str]:
        """The days of ``days`` whose keys may be destroyed now, oldest first."""
        policy = await self.policies.retention(tenant_id, channel_id)
        now = self.policies.clock()
        return sorted(d for d in days if policy.day_due(retention.parse_day(d), now))

    async def _shred(self, tenant_id: str, channel_id: str, day: str) -> bool:
        policy = await self.policies.retention(tenant_id, channel_id)
        command = ShredChannelDay(day=day, now=format_time(self.policies.clock()), days=policy.days, held=policy.held)
        stream = stream_name("channel", channel_id)
        channel = await self.policies.commands.channel(tenant_id, channel_id)
        try:  # the channel's decider must agree before anything is destroyed
            if not channel.exists:
                raise DomainError("the channel does not exist")
            if day in channel.shredded_days:
                raise DomainError("already shredded")
            retention.decide_shred(channel.shredded_days, channel.legal_hold, command)
        except DomainError as exc:
            log.info("retention_day_kept", tenant_id=tenant_id, channel_id=channel_id, day=day, reason=exc.message)
            return False
        await self.keys.destroy(tenant_id, channel_day_key_id(channel_id, day))
        envelope = CommandEnvelope(
            tenant_id, stream, command, actor=SWEEPER, correlation_id=f"retention-sweep-{command.now}"
        )
        outcome = await self.policies.commands.execute(envelope)
        if self.erase is not None:
            await self.erase(tenant_id, channel_id, day, outcome.last.position)
        log.info("retention_day_shredded", tenant_id=tenant_id, channel_id=channel_id, day=day)
        return True
