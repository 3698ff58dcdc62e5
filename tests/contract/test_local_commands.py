"""The embedded backend's command side (a local CommandService on the SQLite log) keeps the
command-path contract."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.ids import utcnow, uuid7
from adapters.sqlite_log import SqliteEventLog
from commands.service import Commands, CommandService
from tests.contract.commands_contract import CommandsContract


class TestLocalCommands(CommandsContract):
    @contextlib.asynccontextmanager
    async def open_commands(self, request: pytest.FixtureRequest) -> AsyncIterator[Commands]:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        log = SqliteEventLog(tmp_path / "events.db")
        await log.start()
        try:
            yield CommandService(log, clock=utcnow, new_id=uuid7)
        finally:
            await log.close()
