"""The user aggregate: an end user of a tenant's product."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from domain.base import Command, Decision, Unchanged
from domain.events import DomainEvent, UserRegistered, UserUpdated


class RegisterUser(Command):
    """Create the user, or update name and metadata if they exist (PUT semantics)."""

    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass(slots=True)
class UserState:
    version: int = 0
    name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.version > 0


def decide(state: UserState, command: Command) -> Decision:
    match command:
        case RegisterUser():
            if not state.exists:
                return [UserRegistered(name=command.name, metadata=command.metadata)]
            if state.name == command.name and state.metadata == command.metadata:
                return Unchanged(state.version)
            return [UserUpdated(name=command.name, metadata=command.metadata)]
    raise TypeError(f"not a user command: {type(command).__name__}")


def evolve(state: UserState, event: DomainEvent) -> UserState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    match event:
        case UserRegistered() | UserUpdated():
            state.name = event.name
            state.metadata = dict(event.metadata)
    return state
