"""Commands on the wire: how an API node asks a decider, and how the decider answers.

A request goes to the command topic as JSON: the command's type and fields, who it is for
(tenant and stream), the caller's actor, correlation id and idempotency key, a
``command_id`` that recognises a redelivery, and ``reply_to``: the node whose partition of
the reply topic awaits the answer, matched by ``request_id``; while tracing, the ``traceparent``
of the span that sent it (also a record header), which the decider continues. The reply carries the events
recorded (or already recorded, ``replayed``), or the error that refused the command.

A request with ``"reply": "events"`` is answered by what it records: the decider produces
no reply for it, and each event record carries ``reply_to``, ``request_id`` and the number of
events of the append in a header (:func:`adapters.kafka.log.reply_header`), which the node's
consumer of the event topic reads. A request that records nothing (a refusal, a replay, a copy
of a request already recorded) is still answered on the reply topic, and so is every request to
a decider that predates the flag: a node accepts both answers, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from commands.ports import ConcurrencyError, Idempotency, IdempotencyKeyReused, LogUnavailable
from commands.service import CommandEnvelope, Outcome
from domain import billing, channel, devices, retention, tenant, usage, user, webhook
from domain.base import Command
from domain.errors import CATEGORIES, DomainError
from domain.events import Event


def _registry() -> dict[str, type[Command]]:
    found: dict[str, type[Command]] = {}
    for module in (tenant, user, channel, usage, billing, webhook, devices, retention):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Command) and value.__module__ == module.__name__:
                found[value.__name__] = value
    return found


COMMANDS = _registry()


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One command as a decider receives it."""

    request_id: str
    reply_to: str
    envelope: CommandEnvelope  # its command_id is always set: a redelivery is recognised by it
    in_events: bool = False  # answer a recorded outcome by the events' headers, not a reply

    def encode(self, command: dict[str, Any] | None = None) -> bytes:
        """The request's record; ``command``: the command's fields as sent (personal ones sealed,
        :meth:`commands.sealing.Sealer.seal_command`), else as they are."""
        envelope = self.envelope
        idem = envelope.idempotency
        traced = {} if envelope.traceparent is None else {"traceparent": envelope.traceparent}
        return orjson.dumps(
            {
                **traced,
                "request_id": self.request_id,
                "command_id": envelope.command_id,
                "reply_to": self.reply_to,
                "tenant_id": envelope.tenant_id,
                "stream": envelope.stream,
                "type": type(envelope.command).__name__,
                "command": envelope.command.model_dump(mode="json") if command is None else command,
                "actor": envelope.actor,
                "correlation_id": envelope.correlation_id,
                "idempotency": {"key": idem.key, "fingerprint": idem.fingerprint} if idem else None,
                "replay_only": envelope.replay_only,
                "reply": "events" if self.in_events else "topic",
            }
        )


def answered_by_events(message: dict[str, Any]) -> bool:
    """Whether a decoded request asks to be answered by its events' headers."""
    return message.get("reply") == "events"


def decode_request(value: bytes) -> tuple[str, str, dict[str, Any]]:
    """``(request_id, reply_to, message)`` of a request, before its command is validated
    (so a command the decider cannot read is still answered)."""
    message: dict[str, Any] = orjson.loads(value)
    return message["request_id"], message["reply_to"], message


def request_from(message: dict[str, Any]) -> CommandRequest:
    """The request of a decoded message; raises if its command does not validate."""
    idem = message.get("idempotency")
    return CommandRequest(
        request_id=message["request_id"],
        reply_to=message["reply_to"],
        envelope=CommandEnvelope(
            tenant_id=message["tenant_id"],
            stream=message["stream"],
            command=COMMANDS[message["type"]].model_validate(message["command"]),
            actor=message.get("actor"),
            correlation_id=message.get("correlation_id"),
            idempotency=Idempotency(idem["key"], idem["fingerprint"]) if idem else None,
            command_id=message["command_id"],
            replay_only=bool(message.get("replay_only", False)),
            traceparent=message.get("traceparent"),
        ),
        in_events=answered_by_events(message),
    )


class RemoteDomainError(DomainError):
    """A rule broken on the decider, carried back to the API node that asked."""

    def __init__(self, category: str, rule: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, **details)
        # The API answers by an error's category and rule; here they are the remote error's,
        # known only per instance, so they shadow DomainError's class-level constants.
        known = category if category in CATEGORIES else DomainError.category  # a decider of another version
        self.category = known  # type: ignore[misc]  # assigning a ClassVar on purpose, see above
        self.rule = rule  # type: ignore[misc]  # likewise


def error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, DomainError):
        return {"kind": "domain", "category": exc.category, "rule": exc.rule, "message": exc.message,
                "details": exc.details}  # fmt: skip
    if isinstance(exc, IdempotencyKeyReused):
        return {"kind": "idempotency_key_reused", "message": str(exc)}
    if isinstance(exc, ConcurrencyError | LogUnavailable):
        return {"kind": "unavailable", "message": str(exc)}
    return {"kind": "invalid", "message": f"the decider could not run the command: {exc}"}


def encode_reply(request_id: str, answer: Outcome | BaseException) -> bytes:
    reply: dict[str, Any] = {"request_id": request_id}
    if isinstance(answer, BaseException):
        reply.update(ok=False, error=error_reply(answer))
    else:
        reply.update(ok=True, replayed=answer.replayed, events=[e.model_dump() for e in answer.events])
    return orjson.dumps(reply)


def raise_reply(error: dict[str, Any]) -> None:
    kind = error.get("kind")
    if kind == "domain":
        raise RemoteDomainError(error["category"], error["rule"], error["message"], error.get("details") or {})
    if kind == "idempotency_key_reused":
        raise IdempotencyKeyReused(error["message"])
    raise LogUnavailable(error.get("message", "the decider failed"))


def outcome_of(reply: dict[str, Any]) -> Outcome:
    """The outcome a reply carries; raises the error it carries instead."""
    if not reply["ok"]:
        raise_reply(reply["error"])
    return Outcome([Event.model_construct(**e) for e in reply["events"]], replayed=reply["replayed"])
