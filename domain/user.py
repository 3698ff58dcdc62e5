"""The user aggregate: an end user of a tenant's product."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from domain import devices, errors
from domain.base import Command, Decision, Unchanged
from domain.events import (
    DomainEvent,
    LegalHoldPlaced,
    LegalHoldReleased,
    PresenceChanged,
    UserErased,
    UserRegistered,
    UserUpdated,
)
from domain.retention import PlaceLegalHold, ReleaseLegalHold, decide_place, decide_release


class RegisterUser(Command):
    """Create the user, or update name and metadata if they exist (PUT semantics)."""

    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class RecordPresence(Command):
    status: Literal["online", "away", "offline"]
    last_seen_at: str


class EraseUser(Command):
    """Forget the user's personal data (docs/erasure.md): refused under a legal hold; again: nothing new."""


@dataclass(slots=True)
class UserState:
    version: int = 0
    name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "offline"
    last_seen_at: str | None = None
    status_seq: int = 0
    devices: devices.DeviceMap = field(default_factory=dict)  # end-to-end encryption keys (domain/devices.py)
    erased_seq: int = 0  # of UserErased
    legal_hold: bool = False  # set and cleared by the legal-hold events (retention), which refuse erasure
    hold_seq: int = 0  # of the legal hold in force (docs/retention.md); 0: none

    @property
    def exists(self) -> bool:
        return self.version > 0


def decide(state: UserState, command: Command) -> Decision:
    match command:
        case RegisterUser():
            if state.erased_seq:
                raise errors.UserIsErased("the user was erased; register the person under a new user id")
            if not state.exists:
                return [UserRegistered(name=command.name, metadata=command.metadata)]
            if state.name == command.name and state.metadata == command.metadata:
                return Unchanged(state.version)
            return [UserUpdated(name=command.name, metadata=command.metadata)]
        case RecordPresence():
            if not state.exists:
                raise errors.UserNotFound("the user is not registered")
            if state.status == command.status:
                return Unchanged(state.status_seq or state.version)
            return [PresenceChanged(status=command.status, last_seen_at=command.last_seen_at)]
        case _ if isinstance(command, devices.COMMANDS):
            if not state.exists:
                raise errors.UserNotFound("the user is not registered")
            return devices.decide(state.devices, state.version, command)
        case PlaceLegalHold() | ReleaseLegalHold():
            if not state.exists:
                raise errors.UserNotFound("the user is not registered")
            if isinstance(command, PlaceLegalHold):
                return decide_place(state.hold_seq, command)
            return decide_release(state.hold_seq, command)
        case EraseUser():
            if not state.exists:
                raise errors.UserNotFound("the user is not registered")
            if state.erased_seq:
                return Unchanged(state.erased_seq)
            if state.legal_hold:
                raise errors.LegalHold("the user is under a legal hold: erasure waits until it is released")
            return [UserErased()]
    raise TypeError(f"not a user command: {type(command).__name__}")


def evolve(state: UserState, event: DomainEvent) -> UserState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    match event:
        case UserRegistered() | UserUpdated():
            state.name = event.name
            state.metadata = dict(event.metadata)
        case UserErased():
            state.name, state.metadata, state.erased_seq = "", {}, state.version
        case PresenceChanged():
            state.status, state.last_seen_at, state.status_seq = event.status, event.last_seen_at, state.version
        case _ if isinstance(event, devices.EVENTS):
            devices.evolve(state.devices, state.version, event)
        case LegalHoldPlaced():
            state.hold_seq, state.legal_hold = state.version, True
        case LegalHoldReleased():
            state.hold_seq, state.legal_hold = 0, False
    return state
