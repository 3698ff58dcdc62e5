"""Property tests of ABAC (domain/policy.py, the tenant decider's policies): evaluation never
raises, deny overrides, the condition language's laws, and the decider's policy history."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from api.policies import PolicyWatch
from domain import errors, policy, tenant
from domain.base import Unchanged
from domain.events import EVENT_TYPES, DomainEvent, PolicyDeleted, PolicySet

SETTINGS = settings(max_examples=200, deadline=None)

PATHS = [
    "action", "principal.kind", "user.id", "user.role", "user.metadata.plan", "user.metadata.org.dept",
    "target.id", "target.metadata.plan", "channel.id", "channel.kind", "channel.e2e", "channel.name",
    "time.hour", "time.minute", "time.weekday", "time.date", "time.iso",
]  # fmt: skip
ACTIONS = ["post_message", "read_messages", "subscribe", "create_channel", "typing"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 30),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["a", "b", ""]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2)
    ),
    max_leaves=6,
)
# any attributes at all, including the wrong shapes where a map is expected
attribute_sets = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(st.sampled_from(ACTIONS), json_values),
        "principal": st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(["user", "tenant"])}), json_values),
        "user": st.one_of(
            st.fixed_dictionaries(
                {"id": st.sampled_from(["a", "b"])},
                optional={
                    "role": st.sampled_from(["owner", "member"]),
                    "metadata": st.dictionaries(st.sampled_from(["plan", "org"]), json_values, max_size=2),
                },
            ),
            json_values,
        ),
        "channel": st.one_of(
            st.fixed_dictionaries({"id": st.sampled_from(["c1", "c2"]), "e2e": st.booleans()}), json_values
        ),
        "time": st.fixed_dictionaries({"hour": st.integers(0, 23), "iso": st.sampled_from(["2026-12-03T10:00:00Z"])}),
    },
)


def operands(path_strategy: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(json_scalars, path_strategy.map(lambda p: {"attr": p}))


def comparisons() -> st.SearchStrategy[Any]:
    path = st.sampled_from(PATHS)
    ordered = st.one_of(st.integers(-5, 30), st.sampled_from(["a", "b", "2026"]), path.map(lambda p: {"attr": p}))
    return st.one_of(
        st.builds(lambda op, p, v: {op: [p, v]}, st.sampled_from(["eq", "ne"]), path, operands(path)),
        st.builds(lambda op, p, v: {op: [p, v]}, st.sampled_from(["lt", "le", "gt", "ge"]), path, ordered),
        st.builds(lambda p, vs: {"in": [p, vs]}, path, st.lists(operands(path), min_size=1, max_size=3)),
        path.map(lambda p: {"exists": p}),
        st.booleans(),
    )


conditions = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"all": cs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"any": cs}),
        inner.map(lambda c: {"not": c}),
    ),
    max_leaves=10,
)


def make(policy_id: str, effect: str, actions: list[str], condition: Any) -> policy.Policy:
    return policy.parse_policy(policy_id, effect, actions, condition, "")


policies = st.builds(
    make,
    st.sampled_from(["p1", "p2", "p3", "p4"]),
    st.sampled_from(["deny", "allow"]),
    st.lists(st.sampled_from([*ACTIONS, "*"]), min_size=1, max_size=2, unique=True),
    conditions,
)
policy_sets = st.lists(policies, max_size=4, unique_by=lambda p: p.policy_id).map(
    lambda ps: sorted(ps, key=lambda p: p.policy_id)
)


@SETTINGS
@given(conditions, attribute_sets)
def test_evaluating_any_valid_condition_on_any_attributes_never_raises(condition: Any, attributes: Any) -> None:
    result = make("p", "deny", ["*"], condition).test(attributes)
    assert isinstance(result, bool)


@SETTINGS
@given(conditions, attribute_sets)
def test_not_not_is_the_condition_itself(condition: Any, attributes: Any) -> None:
    once = make("p", "deny", ["*"], condition).test(attributes)
    twice = make("p", "deny", ["*"], {"not": {"not": condition}}).test(attributes)
    assert once == twice


@SETTINGS
@given(st.lists(conditions, min_size=1, max_size=3), attribute_sets)
def test_all_and_any_obey_de_morgan(parts: list[Any], attributes: Any) -> None:
    def holds(condition: Any) -> bool:
        return make("p", "deny", ["*"], condition).test(attributes)

    assert holds({"not": {"all": parts}}) == holds({"any": [{"not": c} for c in parts]})
    assert holds({"all": parts}) == all(holds(c) for c in parts)
    assert holds({"any": parts}) == any(holds(c) for c in parts)


@SETTINGS
@given(st.sampled_from(PATHS), operands(st.sampled_from(PATHS)), attribute_sets)
def test_ne_is_not_eq_and_in_of_one_is_eq(path: str, operand: Any, attributes: Any) -> None:
    eq = make("p", "deny", ["*"], {"eq": [path, operand]}).test(attributes)
    assert make("p", "deny", ["*"], {"ne": [path, operand]}).test(attributes) == (not eq)
    assert make("p", "deny", ["*"], {"in": [path, [operand]]}).test(attributes) == eq


@SETTINGS
@given(policy_sets, policies, st.sampled_from(ACTIONS), attribute_sets)
def test_adding_a_deny_policy_never_turns_a_denial_into_an_allowance(
    existing: list[policy.Policy], added: policy.Policy, action: str, attributes: Any
) -> None:
    deny = policy.Policy(f"z-{added.policy_id}", "deny", added.actions, added.condition, "")
    before = policy.evaluate(existing, action, attributes)
    after = policy.evaluate(sorted([*existing, deny], key=lambda p: p.policy_id), action, attributes)
    if before is not None:
        assert after is not None


@SETTINGS
@given(policy_sets, st.sampled_from(ACTIONS), attribute_sets)
def test_a_holding_deny_policy_of_the_action_always_refuses(
    existing: list[policy.Policy], action: str, attributes: Any
) -> None:
    deny = make("zz-deny", "deny", [action], True)
    denial = policy.evaluate([*existing, deny], action, attributes)
    assert denial is not None and denial.effect == "deny"
    assert policy.evaluate([*existing, deny], "set_policy", attributes) is None  # never locks the tenant out


@SETTINGS
@given(policy_sets, st.sampled_from(ACTIONS), attribute_sets)
def test_a_denial_names_a_policy_of_the_action_whose_verdict_refuses(
    existing: list[policy.Policy], action: str, attributes: Any
) -> None:
    denial = policy.evaluate(existing, action, attributes)
    applicable = [p for p in existing if p.applies_to(action)]
    if denial is None:
        assert not any(p.effect == "deny" and p.test(attributes) for p in applicable)
        allows = [p for p in applicable if p.effect == "allow"]
        assert not allows or any(p.test(attributes) for p in allows)
        return
    named = next(p for p in applicable if p.policy_id == denial.policy_id)
    if denial.effect == "deny":
        assert named.effect == "deny" and named.test(attributes)
    else:
        assert named.effect == "allow" and not any(p.test(attributes) for p in applicable if p.effect == "allow")


OPERATOR_NAMES = ["eq", "all", "not", "in", "exists", "lt", "zz"]
json_trees = st.recursive(
    st.one_of(json_values, st.sampled_from(PATHS)),
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(OPERATOR_NAMES), inner, min_size=1, max_size=2), st.lists(inner, max_size=3)
    ),
    max_leaves=8,
)


@SETTINGS
@given(json_trees)
def test_any_json_is_either_a_valid_condition_or_a_clear_422(candidate: Any) -> None:
    try:
        compiled = make("p", "deny", ["*"], candidate)
    except errors.PolicyInvalid as exc:
        assert exc.category == "invalid_request" and exc.message.startswith("condition")
        return
    assert isinstance(compiled.test({}), bool)


@SETTINGS
@given(st.sampled_from([float("inf"), float("-inf"), float("nan")]), st.sampled_from(["eq", "lt", "in"]))
def test_a_number_json_cannot_carry_back_is_refused(number: float, op: str) -> None:
    """Python's JSON parser reads Infinity and NaN, which no recorded event could hold again."""
    operand: Any = [number] if op == "in" else number
    try:
        make("p", "deny", ["*"], {op: ["user.metadata.x", operand]})
    except errors.PolicyInvalid as exc:
        assert "finite" in exc.message
    else:
        raise AssertionError(f"{number} was accepted")


# --- the tenant decider's policies -----------------------------------------------------------
def from_log(event: DomainEvent) -> DomainEvent:
    return EVENT_TYPES[event.type].model_validate(event.model_dump(mode="json"))


commands = st.one_of(
    st.builds(
        lambda pid, effect, actions, condition: tenant.SetPolicy(
            policy_id=pid, effect=effect, actions=actions, condition=condition
        ),
        st.sampled_from(["p1", "p2", "p3"]),
        st.sampled_from(["deny", "allow"]),
        st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2, unique=True),
        st.one_of(conditions, st.just({"bad": 1})),
    ),
    st.builds(lambda pid: tenant.DeletePolicy(policy_id=pid), st.sampled_from(["p1", "p2", "p3"])),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(commands, max_size=12))
def test_policy_history_replays_to_the_same_policies_and_repeats_record_nothing(
    history: list[tenant.SetPolicy | tenant.DeletePolicy],
) -> None:
    state = tenant.TenantState(name="acme", version=1)
    recorded: list[DomainEvent] = []
    for command in history:
        try:
            decision = tenant.decide(state, command)
        except (errors.PolicyInvalid, errors.PolicyNotFound):
            continue
        if isinstance(decision, Unchanged):
            if isinstance(command, tenant.SetPolicy):
                assert state.policies[command.policy_id].condition == command.condition
            else:  # deleting a policy deleted before
                assert command.policy_id not in state.policies and command.policy_id in state.policy_seqs
            continue
        for event in decision:
            assert isinstance(event, PolicySet | PolicyDeleted)
            tenant.evolve(state, event)
            recorded.append(event)
        assert isinstance(tenant.decide(state, command), Unchanged)  # the same command again records nothing
    replayed = tenant.TenantState(name="acme", version=1)
    for event in recorded:
        tenant.evolve(replayed, from_log(event))
    assert replayed.policies == state.policies
    assert [p.policy_id for p in replayed.ordered_policies] == sorted(state.policies)


# --- what a batch of events re-judges on open sockets (api/policies.py PolicyWatch) -------
_KINDS = ["PolicySet", "PolicyDeleted", "UserRegistered", "UserUpdated", "UserErased", "MemberRoleChanged",
          "MessagePosted", "MemberAdded"]  # fmt: skip


@st.composite
def _watched_events(draw: st.DrawFn) -> list[Any]:
    from domain.events import Event

    found = []
    for i in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(_KINDS))
        tenant_id = draw(st.sampled_from(["t1", "t2"]))
        who = draw(st.sampled_from(["u1", "u2"]))
        cid = draw(st.sampled_from(["c1", "c2"]))
        stream = (
            f"user:{who}"
            if kind.startswith("User")
            else f"tenant:{tenant_id}"
            if "Policy" in kind
            else f"channel:{cid}"
        )
        envelope = {"event_id": str(i), "seq": i + 1, "position": i + 1, "schema_version": 1,
                    "occurred_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
        found.append(Event(tenant_id=tenant_id, stream=stream, type=kind, payload={"user_id": who}, **envelope))
    return found


@SETTINGS
@given(_watched_events())
def test_a_batch_rejudges_what_its_events_change_and_nothing_else(events: list[Any]) -> None:
    """A policy change re-judges the whole tenant; a user's metadata all of that user's sockets;
    a role change that user's subscription of that channel; any other event nothing."""
    from api.policies import Scope, _widen

    scopes: dict[str, Scope] = {}
    for event in events:
        if event.type in PolicyWatch.WATCHED:
            _widen(scopes, event)
    for tenant_id in ("t1", "t2"):
        mine = [e for e in events if e.tenant_id == tenant_id]
        if any(e.type in ("PolicySet", "PolicyDeleted") for e in mine):
            assert scopes[tenant_id] is None
            continue
        expected: dict[str, set[str] | None] = {}
        for e in mine:
            if e.type.startswith("User"):
                expected[e.stream.split(":")[1]] = None
        for e in mine:
            user_id = e.payload["user_id"]
            if e.type == "MemberRoleChanged" and expected.get(user_id, set()) is not None:
                channels = expected.setdefault(user_id, set())
                assert channels is not None
                channels.add(e.stream.split(":")[1])
        assert scopes.get(tenant_id, {}) == expected
