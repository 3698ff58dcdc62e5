"""Attribute-based access control: a tenant's policies, their condition language, evaluation.

Pure: validation turns a policy document into a :class:`Policy` (or raises
:class:`~domain.errors.PolicyInvalid` naming the bad part), and :func:`evaluate` judges one
request's attributes against a tenant's policies. docs/abac.md is the user's guide.

A condition is JSON:

- ``true`` / ``false``;
- ``{"all": [c, …]}``, ``{"any": [c, …]}``, ``{"not": c}``;
- ``{"eq" | "ne" | "lt" | "le" | "gt" | "ge": [path, operand]}``, ``{"in": [path, [operand, …]]}``,
  ``{"exists": path}``, where ``path`` names an attribute (:data:`ROOTS`) and an operand is a
  JSON scalar or ``{"attr": path}`` (another attribute's value).

A comparison whose attribute is absent (or whose operands are of different kinds: a number
and a string, a boolean and a number) is false; ``ne`` is ``not eq`` (so it holds for an absent
attribute); evaluation never raises.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

from domain import errors

Effect = Literal["deny", "allow"]
Attributes = Mapping[str, Any]  # {"user": {...}, "channel": {...}, "action": str, "time": {...}, …}
Test = Callable[[Attributes], bool]

MAX_POLICIES = 100  # per tenant
MAX_POLICY_BYTES = 8192  # a policy's JSON (actions, condition, description)
MAX_NODES = 200  # operators and operands in one condition
MAX_DEPTH = 12
MAX_IN_VALUES = 100
MAX_DESCRIPTION = 500
POLICY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

# Each root of a path and what may follow it: a set of fixed names, or ``None`` for any
# non-empty further segments (a user's metadata is the tenant's own JSON).
ROOTS: dict[str, dict[str, frozenset[str] | None] | None] = {
    "action": None,
    "principal": {"kind": frozenset()},
    "user": {"id": frozenset(), "role": frozenset(), "metadata": None},
    "target": {"id": frozenset(), "metadata": None},
    "channel": {"id": frozenset(), "kind": frozenset(), "e2e": frozenset(), "name": frozenset()},
    "time": {"hour": frozenset(), "minute": frozenset(), "weekday": frozenset(), "date": frozenset(),
             "iso": frozenset()},
}  # fmt: skip

# What the API checks that is not a command (docs/abac.md, Actions): reads and subscriptions.
QUERY_ACTIONS = (
    "read_channel",
    "read_messages",
    "list_members",
    "list_channels",
    "list_users",
    "read_presence",
    "read_events",
    "read_usage",
    "read_analytics",
    "mint_token",
    "typing",
    "subscribe",
    "list_devices",
    "read_audit",
)
# Never subject to a policy: the tenant can always change its policies back.
EXEMPT_ACTIONS = frozenset({"set_policy", "delete_policy"})
# Commands only the platform admin or CAAS itself issues: no policy ever sees them.
_UNPOLICED = frozenset(
    {"register_tenant", "record_presence", "disable_webhook", "channel_command", "shred_channel_day", *EXEMPT_ACTIONS}
)
_COMMAND_MODULES = ("domain.tenant", "domain.user", "domain.channel", "domain.webhook", "domain.devices",
                    "domain.retention")  # fmt: skip

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
OPERATORS = ("all", "any", "not", *COMPARISONS, "in", "exists")


@cache
def action_name(command_type: type) -> str:
    """A command's action: its class name in snake case (``PostMessage`` → ``post_message``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", command_type.__name__).lower()


@cache
def actions() -> tuple[str, ...]:
    """Every action a policy may name: the tenant's and users' commands, then :data:`QUERY_ACTIONS`."""
    from domain.base import Command

    found: list[str] = []
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Command) and value.__module__ == name:
                action = action_name(value)
                if action not in _UNPOLICED and action not in found:
                    found.append(action)
    return (*found, *QUERY_ACTIONS)


@dataclass(frozen=True)
class Policy:
    """One validated policy. Its condition is compiled once, as it is built (also from a
    snapshot of the tenant's state): ``test`` is not a field, so snapshots hold the JSON only."""

    policy_id: str
    effect: Effect
    actions: frozenset[str]
    condition: Any
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", _compile(self.condition, "condition", 0, [MAX_NODES]))
        object.__setattr__(self, "roots", frozenset(_roots(self.condition)))

    # the attribute roots its condition reads ("user", "channel", "time"…): a request gathers
    # only the attributes its applicable policies read (set per instance, like ``test``)
    roots: ClassVar[frozenset[str]] = frozenset()

    def test(self, attributes: Attributes) -> bool:  # replaced per instance by the compiled condition
        raise NotImplementedError

    def applies_to(self, action: str) -> bool:
        return "*" in self.actions or action in self.actions

    def document(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "effect": self.effect,
            "actions": sorted(self.actions),
            "condition": self.condition,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused: the deny policy whose condition held (``effect`` deny), or the
    allow policies of the action none of whose conditions held (``effect`` allow, the first named)."""

    policy_id: str
    effect: Effect
    policy_ids: tuple[str, ...]


def evaluate(
    policies: Iterable[Policy], action: str, attributes: Attributes, *, applicable: bool = False
) -> Denial | None:
    """Deny-overrides: a deny policy of the action whose condition holds refuses; else, if the
    action has allow policies, one of them must hold; else the request is allowed. Policies are
    judged in ``policy_id`` order (the caller passes them sorted), so the denial is the same
    on every node. Exempt actions are always allowed. ``applicable``: the caller passes only the
    policies that apply to ``action``."""
    if action in EXEMPT_ACTIONS:
        return None
    allows: list[Policy] = []
    for policy in policies:
        if not applicable and not policy.applies_to(action):
            continue
        if policy.effect == "allow":
            allows.append(policy)
        elif policy.test(attributes):
            return Denial(policy.policy_id, "deny", (policy.policy_id,))
    if allows and not any(policy.test(attributes) for policy in allows):
        return Denial(allows[0].policy_id, "allow", tuple(p.policy_id for p in allows))
    return None


# --- validation and compilation ------------------------------------------------------------
def parse_policy(
    policy_id: str,
    effect: str,
    actions_given: Sequence[str],
    condition: Any,
    description: str,
    *,
    known_actions: bool = True,
) -> Policy:
    """Validate a policy document strictly; raise :class:`errors.PolicyInvalid` naming what is wrong.

    ``known_actions=False`` (restoring a recorded policy) accepts actions this process does not
    know: a node older than the one that recorded the policy still applies the rest of it."""
    if not POLICY_ID.fullmatch(policy_id):
        raise errors.PolicyInvalid("policy_id is 1 to 64 of letters, digits, _.- (starting with a letter or digit)")
    if effect not in ("deny", "allow"):
        raise errors.PolicyInvalid(f"effect is 'deny' or 'allow', not {effect!r}", field="effect")
    known = actions() if known_actions else ()
    if not actions_given:
        raise errors.PolicyInvalid("actions lists at least one action, or '*' for every action", field="actions")
    for action in actions_given:
        if known_actions and action != "*" and action not in known:
            hint = " (policies never apply to it)" if action in EXEMPT_ACTIONS else ""
            raise errors.PolicyInvalid(
                f"unknown action {action!r}{hint}; actions: '*', {', '.join(known)}", field="actions", action=action
            )
    if len(description) > MAX_DESCRIPTION:
        raise errors.PolicyInvalid(f"description is at most {MAX_DESCRIPTION} characters", field="description")
    document = {"actions": list(actions_given), "condition": condition, "description": description}
    size = len(json.dumps(document, separators=(",", ":")).encode())
    if size > MAX_POLICY_BYTES:
        raise errors.PolicyInvalid(f"a policy is at most {MAX_POLICY_BYTES} bytes of JSON ({size} given)")
    return Policy(policy_id, "deny" if effect == "deny" else "allow", frozenset(actions_given), condition, description)


def _roots(node: Any) -> Iterable[str]:
    """The roots of the attribute paths a (valid) condition names."""
    if not isinstance(node, dict):
        return
    for op, arg in node.items():
        if op in ("all", "any"):
            for part in arg:
                yield from _roots(part)
        elif op == "not":
            yield from _roots(arg)
        elif op == "exists":
            yield arg.split(".")[0]
        else:
            yield arg[0].split(".")[0]
            for operand in arg[1] if op == "in" else [arg[1]]:
                if isinstance(operand, dict):
                    yield operand["attr"].split(".")[0]


def _invalid(where: str, message: str) -> errors.PolicyInvalid:
    return errors.PolicyInvalid(f"{where}: {message}", field=where)


def _compile(node: Any, where: str, depth: int, budget: list[int]) -> Test:
    budget[0] -= 1
    if budget[0] < 0:
        raise _invalid(where, f"a condition has at most {MAX_NODES} operators and operands")
    if depth > MAX_DEPTH:
        raise _invalid(where, f"a condition nests at most {MAX_DEPTH} deep")
    if isinstance(node, bool):
        return _always if node else _never
    if not isinstance(node, dict) or len(node) != 1:
        raise _invalid(where, f"a condition is true, false or an object with one operator of: {', '.join(OPERATORS)}")
    ((op, arg),) = node.items()
    here = f"{where}.{op}"
    if op in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            raise _invalid(here, "takes a non-empty list of conditions")
        parts = tuple(_compile(c, f"{here}[{i}]", depth + 1, budget) for i, c in enumerate(arg))
        return _all(parts) if op == "all" else _any(parts)
    if op == "not":
        return _not(_compile(arg, here, depth + 1, budget))
    if op == "exists":
        return _exists(_path(arg, here))
    if op in COMPARISONS or op == "in":
        if not isinstance(arg, list) or len(arg) != 2:
            raise _invalid(here, "takes [path, operand]" if op != "in" else "takes [path, [operand, …]]")
        path = _path(arg[0], f"{here}[0]")
        if op == "in":
            values = arg[1]
            if not isinstance(values, list) or not 1 <= len(values) <= MAX_IN_VALUES:
                raise _invalid(f"{here}[1]", f"takes a list of 1 to {MAX_IN_VALUES} operands")
            budget[0] -= len(values)
            operands = tuple(_operand(v, f"{here}[1][{i}]", op) for i, v in enumerate(values))
            return _in(path, operands)
        return _compare(op, path, _operand(arg[1], f"{here}[1]", op))
    raise _invalid(where, f"unknown operator {op!r}; operators: {', '.join(OPERATORS)}")


def _path(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, str) or not value:
        raise _invalid(where, "an attribute path is a string such as 'user.metadata.plan'")
    parts = tuple(value.split("."))
    roots = ", ".join(ROOTS)
    fields = ROOTS.get(parts[0], {})
    if parts[0] not in ROOTS:
        raise _invalid(where, f"unknown attribute {value!r}: a path starts with one of {roots}")
    if fields is None:
        if len(parts) > 1:
            raise _invalid(where, f"unknown attribute {value!r}: {parts[0]!r} has no fields")
        return parts
    if len(parts) < 2 or parts[1] not in fields:
        raise _invalid(where, f"unknown attribute {value!r}: {parts[0]} has {', '.join(fields)}")
    further = fields[parts[1]]
    if further is None:
        if len(parts) < 3 or not all(parts[2:]):
            raise _invalid(where, f"unknown attribute {value!r}: name a key, such as {parts[0]}.{parts[1]}.plan")
    elif len(parts) > 2:
        raise _invalid(where, f"unknown attribute {value!r}: {parts[0]}.{parts[1]} has no fields")
    return parts


Operand = tuple[Literal["value"], Any] | tuple[Literal["attr"], tuple[str, ...]]


def _operand(value: Any, where: str, op: str) -> Operand:
    if isinstance(value, dict):
        if set(value) != {"attr"}:
            raise _invalid(where, 'an operand is a JSON scalar or {"attr": path}')
        return ("attr", _path(value["attr"], f"{where}.attr"))
    if value is not None and not isinstance(value, str | int | float | bool):
        raise _invalid(where, 'an operand is a JSON scalar (string, number, boolean, null) or {"attr": path}')
    if isinstance(value, float) and not math.isfinite(value):  # Python's JSON reads Infinity and NaN
        raise _invalid(where, "a number must be finite (JSON has no Infinity or NaN)")
    if op in ("lt", "le", "gt", "ge") and (value is None or isinstance(value, bool)):
        raise _invalid(where, f"{op} compares numbers or strings")
    return ("value", value)


# --- evaluation ------------------------------------------------------------------------------
class _Missing:
    """An absent attribute."""


MISSING: Any = _Missing()


def resolve(attributes: Attributes, path: tuple[str, ...]) -> Any:
    """The attribute at ``path``, or :data:`MISSING` (attributes are JSON: dicts all the way)."""
    if len(path) == 2 and type(attributes) is dict:  # the common case: "user.id", "channel.e2e"
        inner = attributes.get(path[0], MISSING)
        return inner.get(path[1], MISSING) if type(inner) is dict else _walk(inner, path[1:])
    return _walk(attributes, path)


def _walk(attributes: Any, path: tuple[str, ...]) -> Any:
    value: Any = attributes
    for part in path:
        if type(value) is not dict and not isinstance(value, Mapping):
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def _value(attributes: Attributes, operand: Operand) -> Any:
    return resolve(attributes, operand[1]) if operand[0] == "attr" else operand[1]


_PLAIN_KINDS = {str: "str", int: "number", float: "number", bool: "bool", type(None): "null"}


def _kind(value: Any) -> str:
    """Values compare only within a kind: booleans are not numbers here."""
    found = _PLAIN_KINDS.get(type(value))
    if found is not None:
        return found
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def equal(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING or _kind(a) != _kind(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # a value of the tenant's metadata that cannot compare
        return False


def order(op: str, a: Any, b: Any) -> bool:
    kind = _kind(a)
    if a is MISSING or b is MISSING or kind != _kind(b) or kind not in ("number", "str"):
        return False
    if op == "lt":
        return bool(a < b)
    if op == "le":
        return bool(a <= b)
    if op == "gt":
        return bool(a > b)
    return bool(a >= b)


def _always(attributes: Attributes) -> bool:
    return True


def _never(attributes: Attributes) -> bool:
    return False


def _all(parts: tuple[Test, ...]) -> Test:
    return lambda attributes: all(p(attributes) for p in parts)


def _any(parts: tuple[Test, ...]) -> Test:
    return lambda attributes: any(p(attributes) for p in parts)


def _not(part: Test) -> Test:
    return lambda attributes: not part(attributes)


def _exists(path: tuple[str, ...]) -> Test:
    return lambda attributes: resolve(attributes, path) is not MISSING


def _in(path: tuple[str, ...], operands: tuple[Operand, ...]) -> Test:
    def test(attributes: Attributes) -> bool:
        value = resolve(attributes, path)
        return any(equal(value, _value(attributes, o)) for o in operands)

    return test


def _compare(op: str, path: tuple[str, ...], operand: Operand) -> Test:
    if operand[0] == "value" and op in ("eq", "ne"):  # the common case: an attribute against a constant
        constant, kind, negate = operand[1], _kind(operand[1]), op == "ne"

        def against(attributes: Attributes) -> bool:
            value = resolve(attributes, path)
            if value is MISSING or _kind(value) != kind:
                return negate
            try:
                return bool(value == constant) != negate
            except Exception:  # a value of the tenant's metadata that cannot compare
                return negate

        return against
    if op == "eq":
        return lambda attributes: equal(resolve(attributes, path), _value(attributes, operand))
    if op == "ne":
        return lambda attributes: not equal(resolve(attributes, path), _value(attributes, operand))
    return lambda attributes: order(op, resolve(attributes, path), _value(attributes, operand))
