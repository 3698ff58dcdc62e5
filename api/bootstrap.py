"""The composition root: the only place that picks concrete adapters from settings."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.ids import utcnow, uuid7
from adapters.memory_bus import MemoryBus
from api.limits import Limits
from api.observability import MeteredCommands, count_events
from api.settings import Settings
from api.socket_watch import SocketWatch
from commands.auth import Authenticator
from commands.ports import EphemeralBus, EventLog
from commands.service import Commands, CommandService
from domain.presence import Timing
from projections import chat, eventindex
from projections.ports import ReadStore
from projections.queries import ChatQueries
from streams.fanout import Hub
from streams.presence import PresenceService
from streams.projector import Projection, ProjectionRunner

CHAT = Projection(chat.NAME, chat.COLLECTIONS, chat.project)
EVENT_INDEX = Projection(eventindex.NAME, eventindex.COLLECTIONS, eventindex.project)
PROJECTIONS = {CHAT.name: CHAT}
DISTRIBUTED_PROJECTIONS = {CHAT.name: CHAT, EVENT_INDEX.name: EVENT_INDEX}


def persistent_secret(data_dir: Path, name: str, given: str | None) -> str:
    """``given`` if set, else a secret generated once and kept in the data dir."""
    if given:
        return given
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def build_log(settings: Settings) -> EventLog:
    from adapters.sqlite_log import SqliteEventLog

    return SqliteEventLog(settings.data_dir / "events.db")


def build_store(settings: Settings) -> ReadStore:
    if settings.backend == "kafka":
        from adapters.mongo_store import MongoReadStore

        return MongoReadStore(settings.mongo_url, settings.mongo_database, timeout=settings.mongo_timeout_seconds)
    from adapters.sqlite_store import SqliteReadStore

    return SqliteReadStore(settings.data_dir / "read.db")


@dataclass
class Engine:
    """Everything a running CAAS node needs, wired together."""

    settings: Settings
    log: EventLog
    store: ReadStore
    service: Commands
    auth: Authenticator
    queries: ChatQueries
    runner: Any
    hub: Hub = field(default_factory=Hub)
    node: Any = None
    bus: EphemeralBus = field(default_factory=MemoryBus)
    presence: PresenceService = field(init=False)
    node_id: str = field(default_factory=lambda: f"node-{uuid7()}")
    limits: Limits = field(init=False)
    sockets: dict[tuple[str, str], int] = field(default_factory=dict)
    socket_watch: SocketWatch = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        if self.node is not None:
            self.node_id = self.node.node_id
        self.presence = PresenceService(
            self.bus,
            self.hub,
            self.service,
            self.node_id,
            timing=Timing(s.presence_away_seconds, s.presence_grace_seconds, s.presence_node_timeout_seconds),
            heartbeat=s.presence_heartbeat_seconds,
            typing_ttl=s.typing_ttl_seconds,
            typing_throttle=s.typing_throttle_seconds,
            typing_max_watchers=s.typing_max_watchers,
        )
        self.socket_watch = SocketWatch(self.auth, s.ws_stall_seconds)
        self.limits = Limits(
            user_writes=(s.rate_user_writes_per_second, s.rate_user_writes_burst),
            tenant_writes=(s.rate_tenant_writes_per_second, s.rate_tenant_writes_burst),
            tenant_reads=(s.rate_tenant_reads_per_second, s.rate_tenant_reads_burst),
            ws_frames=(s.ws_frames_per_second, s.ws_frames_burst),
            nodes=(lambda: len(self.presence.state.nodes)) if s.rate_limit_scope == "cluster" else (lambda: 1),
        )

    async def start(self) -> None:
        await self.log.start()
        await self.store.start()
        self.log.listen(self.hub.publish)
        self.log.listen(count_events)
        self.log.listen(self.socket_watch.on_events)
        if self.node is not None:
            await self.node.start()
        else:
            await self.runner.start()
        await self.bus.start()
        await self.presence.start(await self.durable_presence())

    async def durable_presence(self) -> dict[tuple[str, str], str]:
        """Each user's last recorded presence status, to reconcile at start."""
        if self.node is not None:
            return self.node.presence_statuses()  # type: ignore[no-any-return]
        found: dict[tuple[str, str], str] = {}
        after = 0
        while events := await self.log.read_all(after_position=after, limit=5000, types=["PresenceChanged"]):
            for event in events:
                found[(event.tenant_id, event.stream_id)] = event.payload["status"]
            after = events[-1].position
        return found

    async def close(self) -> None:
        await self.socket_watch.close()
        await self.presence.close()
        await self.bus.close()
        if self.node is not None:
            await self.node.close()
        else:
            await self.runner.close()
        await self.log.close()
        await self.store.close()


def build_kafka_engine(settings: Settings) -> Engine:
    from adapters.kafka.node import IndexedLog, KafkaNode, Progress

    store = build_store(settings)
    log = IndexedLog(store)
    node = KafkaNode(
        settings.kafka_bootstrap,
        settings.kafka_topic_prefix,
        settings.kafka_partitions,
        log,
        timeout=settings.command_timeout_seconds,
    )
    auth = Authenticator(
        node,  # type: ignore[arg-type]
        admin_token=admin_token(settings),
        secret_key=persistent_secret(settings.data_dir, "secret_key", settings.secret_key),
    )
    runner = Progress(store, list(DISTRIBUTED_PROJECTIONS), node, stall_seconds=settings.projection_stall_seconds)
    from adapters.kafka.bus import KafkaBus

    bus = KafkaBus(settings.kafka_bootstrap, f"{settings.kafka_topic_prefix}ephemeral", settings.kafka_partitions)
    commands = MeteredCommands(node)
    return Engine(settings, log, store, commands, auth, ChatQueries(store), runner, node=node, bus=bus)


def build_engine(settings: Settings) -> Engine:
    if settings.backend == "kafka":
        return build_kafka_engine(settings)
    log = build_log(settings)
    store = build_store(settings)
    service = CommandService(log, clock=utcnow, new_id=uuid7)
    auth = Authenticator(
        service,
        admin_token=admin_token(settings),
        secret_key=persistent_secret(settings.data_dir, "secret_key", settings.secret_key),
    )
    runner = ProjectionRunner(log, store, list(PROJECTIONS.values()), stall_seconds=settings.projection_stall_seconds)
    return Engine(settings, log, store, MeteredCommands(service), auth, ChatQueries(store), runner)


def admin_token(settings: Settings) -> str:
    return persistent_secret(settings.data_dir, "admin_token", settings.admin_token)
