"""Commands on the wire: how an API node asks a decider, and how the decider answers."""

from __future__ import annotations

from typing import Any

from commands.ports import ConcurrencyError, IdempotencyKeyReused, LogUnavailable
from domain import channel, tenant, user
from domain.base import Command
from domain.errors import DomainError
from domain.events import Event


def _registry() -> dict[str, type[Command]]:
    found: dict[str, type[Command]] = {}
    for module in (tenant, user, channel):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Command) and value.__module__ == module.__name__:
                found[value.__name__] = value
    return found


COMMANDS = _registry()


class RemoteDomainError(DomainError):
    """A rule broken on the decider, carried back to the API node that asked."""

    def __init__(self, category: str, rule: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, **details)
        self.category = category  # type: ignore[misc]
        self.rule = rule  # type: ignore[misc]


def error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, DomainError):
        return {"kind": "domain", "category": exc.category, "rule": exc.rule, "message": exc.message,
                "details": exc.details}  # fmt: skip
    if isinstance(exc, IdempotencyKeyReused):
        return {"kind": "idempotency_key_reused", "message": str(exc)}
    if isinstance(exc, ConcurrencyError | LogUnavailable):
        return {"kind": "unavailable", "message": str(exc)}
    return {"kind": "invalid", "message": f"the decider could not run the command: {exc}"}


def raise_reply(error: dict[str, Any]) -> None:
    kind = error.get("kind")
    if kind == "domain":
        raise RemoteDomainError(error["category"], error["rule"], error["message"], error.get("details") or {})
    if kind == "idempotency_key_reused":
        raise IdempotencyKeyReused(error["message"])
    raise LogUnavailable(error.get("message", "the decider failed"))


def events_from_reply(events: list[dict[str, Any]]) -> list[Event]:
    return [Event.model_construct(**e) for e in events]
