"""Property tests of the webhook aggregate (domain/webhook.py): the recorded events alone
rebuild the state, a repeat records nothing, and a disable decided on a version that moved
since (a re-enable, a change) is never recorded."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from commands import snapshots
from domain import errors, webhook
from domain.base import Command, Unchanged
from domain.events import EVENT_TYPES, DomainEvent, WebhookDisabled
from streams.webhooks import Policy

urls = st.sampled_from(["https://a.example/hook", "https://b.example/hook"])
types = st.lists(st.sampled_from(["*", "MessagePosted", "ReactionAdded"]), min_size=1, max_size=2, unique=True)
commands = st.one_of(
    st.builds(webhook.RegisterWebhook, url=urls, event_types=types),
    st.builds(
        webhook.UpdateWebhook,
        url=st.one_of(st.none(), urls),
        event_types=st.one_of(st.none(), types),
        enabled=st.one_of(st.none(), st.booleans()),
    ),
    st.builds(webhook.DisableWebhook, reason=st.just("failing"), seen_version=st.integers(0, 12)),
    st.builds(webhook.ReplayWebhook, from_position=st.integers(0, 100)),
    st.builds(webhook.DeleteWebhook),
    st.builds(webhook.RotateWebhookSecret),
)


def through_log(event: DomainEvent) -> DomainEvent:
    return EVENT_TYPES[event.type].model_validate(event.model_dump(mode="json"))


def decide(state: webhook.WebhookState, command: Command) -> list[DomainEvent] | Unchanged | None:
    try:
        return webhook.decide(state, command)
    except (errors.WebhookNotFound, errors.Conflict):
        return None


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(commands, max_size=30))
def test_replay_equals_incremental_and_stale_disables_record_nothing(steps: list[Command]) -> None:
    state, recorded = webhook.WebhookState(), []
    for command in steps:
        before = copy.deepcopy(state)
        decision = decide(state, command)
        if decision is None:  # refused: only for an endpoint that is not there, or a second registration
            assert not before.exists or isinstance(command, webhook.RegisterWebhook)
            continue
        if isinstance(decision, Unchanged):
            assert 0 <= decision.seq <= state.version
            continue
        if isinstance(command, webhook.DisableWebhook):
            # recorded only when judged on the version the endpoint has now, while it is enabled
            assert command.seen_version == before.version and before.enabled
        for event in decision:
            webhook.evolve(state, event)
            recorded.append(event)
        if isinstance(command, webhook.RotateWebhookSecret):  # a new generation each time: the rotation's seq
            assert (
                state.secret_generation == state.version and decision[0].previous_generation == before.secret_generation
            )
        elif not isinstance(command, webhook.ReplayWebhook | webhook.RegisterWebhook):
            again = decide(state, command)  # the same command again: nothing new
            assert again is None or isinstance(again, Unchanged)
    replayed = webhook.WebhookState()
    for event in recorded:
        webhook.evolve(replayed, through_log(event))
    assert replayed == state
    assert snapshots.decode(webhook.WebhookState, snapshots.encode(state)) == state


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(commands, max_size=30), judged=st.integers(0, 30))
def test_a_reenable_is_never_undone_by_a_disable_judged_before_it(steps: list[Command], judged: int) -> None:
    state = webhook.WebhookState()
    for command in steps:
        decision = decide(state, command)
        if isinstance(decision, list):
            for event in decision:
                webhook.evolve(state, event)
    if not state.exists:
        return
    decision = decide(state, webhook.UpdateWebhook(enabled=True))
    if isinstance(decision, list):
        for event in decision:
            webhook.evolve(state, event)
    assert state.enabled
    stale = decide(state, webhook.DisableWebhook(reason="failing", seen_version=min(judged, state.version - 1)))
    assert isinstance(stale, Unchanged)
    fresh = decide(state, webhook.DisableWebhook(reason="failing", seen_version=state.version))
    assert isinstance(fresh, list) and isinstance(fresh[0], WebhookDisabled)


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(1, 200),
    base=st.floats(0.01, 60),
    cap=st.floats(1, 7200),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_backoff_doubles_up_to_the_cap_with_jitter(attempt: int, base: float, cap: float, rand: float) -> None:
    policy = Policy(retry_base=base, retry_max=cap)
    step = min(cap, base * 2.0 ** min(attempt - 1, 40))
    wait = policy.backoff(attempt, lambda: rand)
    assert step / 2 <= wait <= step
    assert policy.backoff(attempt + 1, lambda: 0.999) >= policy.backoff(attempt, lambda: 0.999) or step == cap


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 5),
    per_tenant=st.integers(1, 5),
    steps=st.lists(st.tuples(st.sampled_from(["want", "done", "cancel"]), st.sampled_from("abc")), max_size=40),
)
def test_send_slots_stay_within_both_limits_and_never_leave_a_tenant_waiting_on_a_free_slot(
    total: int, per_tenant: int, steps: list[tuple[str, str]]
) -> None:
    """``FairSlots``: however tenants ask, finish and give up, no more than ``total`` (nor
    ``per_tenant`` of one tenant) are held, no tenant waits while a slot it may take is free,
    and once everything ends no slot is left held."""
    import asyncio

    from streams.webhooks import FairSlots

    async def go() -> None:
        slots = FairSlots(total, per_tenant)
        release = {t: asyncio.Event() for t in "abc"}
        tasks: dict[str, list[asyncio.Task[None]]] = {t: [] for t in "abc"}
        holding: dict[str, int] = dict.fromkeys("abc", 0)

        async def use(tenant: str) -> None:
            async with slots.slot(tenant):
                holding[tenant] += 1
                try:
                    await release[tenant].wait()
                finally:
                    holding[tenant] -= 1

        for action, tenant in steps:
            if action == "want":
                tasks[tenant].append(asyncio.create_task(use(tenant)))
            elif tasks[tenant]:
                task = tasks[tenant].pop(0)
                if action == "done":
                    release[tenant].set()
                    await asyncio.sleep(0)
                    release[tenant].clear()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            for _ in range(3):
                await asyncio.sleep(0)
            assert sum(holding.values()) == slots.busy <= total
            assert all(n <= min(per_tenant, total) for n in holding.values())
            for waiting, queue in slots.waiting.items():
                assert not (any(not f.done() for f in queue) and slots._free(waiting)), "waits on a free slot"
        for event in release.values():
            event.set()
        for queue in tasks.values():
            for task in queue:
                task.cancel()
        await asyncio.gather(*(t for q in tasks.values() for t in q), return_exceptions=True)
        assert slots.busy == 0 and not slots.held

    asyncio.run(go())
