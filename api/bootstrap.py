"""The composition root: the only place that picks concrete adapters from settings."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from adapters.ids import utcnow, uuid7
from api.settings import Settings
from commands.auth import Authenticator
from commands.ports import EventLog
from commands.service import CommandService
from projections import chat
from projections.ports import ReadStore
from projections.queries import ChatQueries
from streams.fanout import Hub
from streams.projector import Projection, ProjectionRunner

CHAT = Projection(chat.NAME, chat.COLLECTIONS, chat.project)
PROJECTIONS = {CHAT.name: CHAT}


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
    from adapters.sqlite_store import SqliteReadStore

    return SqliteReadStore(settings.data_dir / "read.db")


@dataclass
class Engine:
    """Everything a running CAAS node needs, wired together."""

    settings: Settings
    log: EventLog
    store: ReadStore
    service: CommandService
    auth: Authenticator
    queries: ChatQueries
    runner: ProjectionRunner
    hub: Hub = field(default_factory=Hub)

    async def start(self) -> None:
        await self.log.start()
        await self.store.start()
        self.log.listen(self.hub.publish)
        await self.runner.start()

    async def close(self) -> None:
        await self.runner.close()
        await self.log.close()
        await self.store.close()


def build_engine(settings: Settings) -> Engine:
    if settings.backend != "embedded":
        raise NotImplementedError("the kafka backend is not available in this build")
    log = build_log(settings)
    store = build_store(settings)
    service = CommandService(log, clock=utcnow, new_id=uuid7)
    auth = Authenticator(
        service,
        admin_token=admin_token(settings),
        secret_key=persistent_secret(settings.data_dir, "secret_key", settings.secret_key),
    )
    runner = ProjectionRunner(log, store, list(PROJECTIONS.values()))
    return Engine(settings, log, store, service, auth, ChatQueries(store), runner)


def admin_token(settings: Settings) -> str:
    return persistent_secret(settings.data_dir, "admin_token", settings.admin_token)
