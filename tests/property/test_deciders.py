"""Property tests of the pure deciders: random command sequences from several users.

Each history is decided and evolved step by step by the real ``decide`` and ``evolve``;
the properties look at every step: what was accepted, what was refused, what a repeat
returned, and whether the recorded events alone rebuild the same state.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import channel as ch
from domain import errors, tenant, user
from domain.base import Actor, Unchanged
from domain.errors import DomainError
from domain.events import (
    EVENT_TYPES,
    ApiKeyRevoked,
    DomainEvent,
    MemberAdded,
    MemberBanned,
    MemberMuted,
    MemberRoleChanged,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    ReactionAdded,
    ReadMarkerMoved,
    TenantRegistered,
    UserRegistered,
    UserUpdated,
)
from tests.property.strategies import History, Step, histories

SETTINGS = settings(max_examples=50, deadline=None)


def from_log(event: DomainEvent) -> DomainEvent:
    """The event as a reader of the log gets it back: through JSON and validation."""
    return EVENT_TYPES[event.type].model_validate(event.model_dump(mode="json"))


def fold(new: Any, evolve: Any, events: list[DomainEvent]) -> Any:
    state = new()
    for event in events:
        evolve(state, from_log(event))
    return state


def after(history: History, index: int) -> ch.ChannelState:
    steps = history.steps
    return steps[index + 1].before if index + 1 < len(steps) else history.state


def acts_as(actor: Actor, user_id: str) -> bool:
    return actor.kind != "user" or actor.id == user_id


def is_admin(state: ch.ChannelState, actor: Actor) -> bool:
    return actor.kind != "user" or state.members.get(actor.id) in ("owner", "admin")


def actively_muted(state: ch.ChannelState, user_id: str, now: str) -> bool:
    entry = state.muted.get(user_id)
    return entry is not None and (entry[0] is None or entry[0] > now)


def accepted(step: Step) -> bool:
    return isinstance(step.outcome, list)


def refused(step: Step) -> bool:
    return isinstance(step.outcome, DomainError)


# --- channel: structure ------------------------------------------------------------------------
@SETTINGS
@given(histories())
def test_refused_channel_command_changes_nothing_and_accepted_ones_extend_seq_without_gaps(history: History) -> None:
    version = 0
    for index, step in enumerate(history.steps):
        state = copy.deepcopy(step.before)
        try:
            again: Any = ch.decide(state, step.command)
        except DomainError as exc:
            again = exc
        assert state == step.before, "decide must not change the state it is given"
        if refused(step):
            assert type(again) is type(step.outcome)
            assert after(history, index) == step.before
        else:
            assert again == step.outcome, "decide is deterministic"
        assert step.before.version == version == step.first_seq - 1
        if accepted(step):
            assert isinstance(step.outcome, list) and step.outcome, "an accepted command records at least one event"
            version += len(step.outcome)
        assert after(history, index).version == version
    assert history.state.version == len(history.events)


@SETTINGS
@given(histories())
def test_channel_state_rebuilt_from_recorded_events_equals_incrementally_evolved_state(history: History) -> None:
    assert fold(ch.ChannelState, ch.evolve, history.events) == history.state
    for step in history.steps:
        assert fold(ch.ChannelState, ch.evolve, history.events[: step.first_seq - 1]) == step.before


# --- channel: repeats --------------------------------------------------------------------------
def expected_unchanged(step: Step) -> int | None:
    """The seq a repeat of an already-recorded effect must answer with, if the command is one."""
    s, c = step.before, step.command
    match c:
        case ch.PostMessage(client_msg_id=str(cmid)) if acts_as(c.actor, c.author_id):
            return s.client_msg_ids.get((c.author_id, cmid))
        case ch.AddReaction() if acts_as(c.actor, c.user_id) and c.user_id in s.members:
            message = s.messages.get(c.message_id)
            if message is not None and not message.deleted_seq:
                return message.reactions.get((c.emoji, c.user_id))
        case ch.MoveReadMarker() if acts_as(c.actor, c.user_id) and c.user_id in s.members and c.seq <= s.version:
            marker = s.read_markers.get(c.user_id)
            return marker[1] if marker is not None and c.seq <= marker[0] else None
        case ch.BanMember() if (
            s.kind == "group" and is_admin(s, c.actor) and (c.actor.kind != "user" or c.actor.id in s.members)
        ):
            return s.banned.get(c.user_id)
        case ch.DeleteMessage() if c.message_id in s.messages:
            message = s.messages[c.message_id]
            allowed = acts_as(c.actor, message.author_id) or is_admin(s, c.actor)
            return message.deleted_seq or None if allowed else None
    return None


def records_same_effect(command: Any, event: DomainEvent) -> bool:
    match command, event:
        case ch.PostMessage(), MessagePosted():
            return (event.author_id, event.client_msg_id) == (command.author_id, command.client_msg_id)
        case ch.AddReaction(), ReactionAdded():
            return (event.message_id, event.user_id, event.emoji) == (
                command.message_id,
                command.user_id,
                command.emoji,
            )
        case ch.MoveReadMarker(), ReadMarkerMoved():
            return event.user_id == command.user_id and event.seq >= command.seq
        case ch.BanMember(), MemberBanned():
            return event.user_id == command.user_id
        case ch.DeleteMessage(), MessageDeleted():
            return event.message_id == command.message_id
        case ch.MuteMember(), MemberMuted():
            return (event.user_id, event.until) == (command.user_id, command.until)
        case ch.AddMember(), MemberAdded() | MemberRoleChanged():
            return (event.user_id, event.role) == (command.user_id, command.role)
        case ch.CreateChannel(), _:
            return event.type == "ChannelCreated"
    return False


@SETTINGS
@given(histories())
def test_repeated_channel_commands_return_unchanged_with_the_seq_of_the_first_event(history: History) -> None:
    for index, step in enumerate(history.steps):
        expected = expected_unchanged(step)
        if expected is not None:
            assert step.outcome == Unchanged(expected), step.command
        if isinstance(step.outcome, Unchanged):
            assert 1 <= step.outcome.seq <= step.before.version
            assert records_same_effect(step.command, history.events[step.outcome.seq - 1]), step.command
            assert after(history, index) == step.before
        # retrying an accepted command at once returns its first result and records nothing
        if accepted(step) and not isinstance(step.command, ch.CreateChannel | ch.EditMessage | ch.RemoveMember):
            retry: Any = step.command
            if isinstance(retry, ch.PostMessage):
                if retry.client_msg_id is None:
                    continue
                retry = retry.model_copy(update={"message_id": f"{retry.message_id}-retry"})
            if isinstance(retry, ch.RemoveReaction | ch.UnmuteMember | ch.UnbanMember):
                continue
            if isinstance(retry, ch.AddMember | ch.BanMember | ch.MuteMember) and retry.user_id == retry.actor.id:
                continue  # an admin who demoted or banned themselves may no longer repeat it
            state = copy.deepcopy(after(history, index))
            assert ch.decide(state, retry) == Unchanged(step.first_seq), retry


# --- channel: rules ----------------------------------------------------------------------------
@SETTINGS
@given(histories())
def test_only_members_post_and_react_and_muted_members_wait_for_the_mute_to_expire(history: History) -> None:
    for step in history.steps:
        s, c = step.before, step.command
        if isinstance(c, ch.PostMessage):
            retry = c.client_msg_id is not None and (c.author_id, c.client_msg_id) in s.client_msg_ids
            muted = c.actor.kind == "user" and actively_muted(s, c.author_id, c.now)
            if accepted(step):
                assert c.author_id in s.members and acts_as(c.actor, c.author_id)
                assert not muted, "a muted member posted before the mute expired"
                assert c.message_id not in s.messages
            if muted and not retry and acts_as(c.actor, c.author_id) and c.author_id in s.members:
                assert isinstance(step.outcome, errors.MemberMuted)
            plain = c.parent_id is None and c.message_id not in s.messages and well_formed(s, c.text, c.e2e)
            if c.author_id in s.members and acts_as(c.actor, c.author_id) and not muted and not retry and plain:
                assert accepted(step), f"a member could not post: {step.outcome!r}"
        if isinstance(c, ch.AddReaction | ch.RemoveReaction) and accepted(step):
            assert c.user_id in s.members and acts_as(c.actor, c.user_id)
            assert c.message_id in s.messages
        if isinstance(c, ch.AddReaction) and accepted(step):
            assert not s.messages[c.message_id].deleted_seq
        if isinstance(c, ch.AddReaction | ch.PostMessage | ch.MoveReadMarker):
            user_id = c.author_id if isinstance(c, ch.PostMessage) else c.user_id
            if user_id not in s.members and not isinstance(step.outcome, Unchanged):
                assert refused(step)


def well_formed(state: ch.ChannelState, text: str, e2e: dict[str, Any] | None) -> bool:
    """Whether a message's form fits the channel: an envelope and no text in an e2e channel, none elsewhere."""
    return (e2e is not None and not text) if state.e2e else e2e is None


@SETTINGS
@given(histories())
def test_e2e_channels_record_only_ciphertext_and_others_never_an_envelope(history: History) -> None:
    for step in history.steps:
        for event in step.outcome if isinstance(step.outcome, list) else []:
            if isinstance(event, MessagePosted | MessageEdited):
                if step.before.e2e:
                    assert event.e2e is not None and event.text == "", "plaintext recorded in an e2e channel"
                else:
                    assert event.e2e is None
        c = step.command
        if isinstance(c, ch.PostMessage | ch.EditMessage) and step.before.exists and step.before.e2e and c.text:
            assert not accepted(step) or isinstance(step.outcome, Unchanged)


@SETTINGS
@given(histories())
def test_only_the_author_edits_and_the_author_or_an_admin_deletes(history: History) -> None:
    deleted: set[str] = set()
    for step in history.steps:
        s, c = step.before, step.command
        if isinstance(c, ch.EditMessage):
            message = s.messages.get(c.message_id)
            if accepted(step):
                assert message is not None and acts_as(c.actor, message.author_id)
            if message is not None and message.deleted_seq:
                assert refused(step), "a deleted message was edited"
            if message is not None and not message.deleted_seq and acts_as(c.actor, message.author_id):
                assert accepted(step) == well_formed(s, c.text, c.e2e)
        if isinstance(c, ch.DeleteMessage):
            message = s.messages.get(c.message_id)
            if accepted(step):
                assert message is not None and not message.deleted_seq
                assert acts_as(c.actor, message.author_id) or is_admin(s, c.actor)
            if message is not None and not message.deleted_seq:
                allowed = acts_as(c.actor, message.author_id) or is_admin(s, c.actor)
                assert accepted(step) == allowed
        for event in step.outcome if isinstance(step.outcome, list) else []:
            if isinstance(event, MessageEdited | ReactionAdded):
                assert event.message_id not in deleted, "nothing changes a deleted message"
            if isinstance(event, MessageDeleted):
                deleted.add(event.message_id)


@SETTINGS
@given(histories())
def test_direct_channels_keep_two_members_and_banned_users_cannot_be_added(history: History) -> None:
    for index, step in enumerate(history.steps):
        s, c = step.before, step.command
        state = after(history, index)
        assert not set(state.members) & set(state.banned), "a banned user is a member"
        if state.exists and state.kind == "direct":
            assert len(state.members) == 2
        if isinstance(c, ch.CreateChannel) and accepted(step):
            assert isinstance(step.outcome, list)
            added = [e.user_id for e in step.outcome if isinstance(e, MemberAdded)]
            assert len(added) == len(set(added))
            if c.kind == "direct":
                assert len(added) == 2
        if isinstance(c, ch.AddMember):
            if c.user_id in s.banned:
                assert refused(step), "a banned user was added"
            if accepted(step):
                assert is_admin(s, c.actor) and (c.actor.kind != "user" or c.actor.id in s.members)


# --- user --------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["Ada", "Grace", "Édith"]), st.sampled_from([{}, {"plan": "pro"}, {"n": [1, 2]}])),
        max_size=25,
    )
)
def test_user_registration_is_idempotent_and_replays_to_the_same_state(commands: list[tuple[str, Any]]) -> None:
    state, events = user.UserState(), []
    for name, metadata in commands:
        before = copy.deepcopy(state)
        decision = user.decide(state, user.RegisterUser(name=name, metadata=metadata))
        assert state == before
        if isinstance(decision, Unchanged):
            assert (before.name, before.metadata) == (name, metadata)
            first = events[decision.seq - 1]
            assert isinstance(first, UserRegistered | UserUpdated) and (first.name, first.metadata) == (name, metadata)
            continue
        [event] = decision
        assert isinstance(event, UserUpdated if before.exists else UserRegistered)
        user.evolve(state, event)
        events.append(event)
        assert state.version == len(events)
        assert (state.name, state.metadata) == (name, metadata)
    assert fold(user.UserState, user.evolve, events) == state


# --- tenant ------------------------------------------------------------------------------------
@st.composite
def tenant_commands(draw: Any) -> list[Any]:
    commands: list[Any] = []
    for n in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["register", "issue", "issue", "revoke", "revoke", "revoke"]))
        if kind == "register":
            commands.append(tenant.RegisterTenant(name="acme", key_id=f"k{n}", key_hash=f"h{n}"))
        elif kind == "issue":
            commands.append(tenant.IssueApiKey(key_id=f"k{n}", key_hash=f"h{n}"))
        else:
            commands.append(tenant.RevokeApiKey(key_id=f"k{draw(st.integers(0, n))}"))
    return commands


@settings(max_examples=100, deadline=None)
@given(tenant_commands())
def test_tenant_keeps_an_active_key_and_replays_to_the_same_state(commands: list[Any]) -> None:
    state, events = tenant.TenantState(), []
    for command in commands:
        before = copy.deepcopy(state)
        try:
            decision = tenant.decide(state, command)
        except DomainError as exc:
            assert state == before
            if not before.exists:
                assert isinstance(command, tenant.RegisterTenant) or isinstance(exc, errors.TenantNotFound)
            elif isinstance(command, tenant.RevokeApiKey):
                key = before.keys.get(command.key_id)
                assert key is None or before.active_keys() == [key], "only the last active key may not be revoked"
            else:
                assert isinstance(command, tenant.RegisterTenant), "a registered tenant refused a new key"
            continue
        assert state == before
        if isinstance(decision, Unchanged):
            assert isinstance(command, tenant.RevokeApiKey) and before.keys[command.key_id].revoked
            first = events[decision.seq - 1]
            assert isinstance(first, ApiKeyRevoked) and first.key_id == command.key_id
            continue
        if isinstance(command, tenant.RegisterTenant):
            assert not before.exists and isinstance(decision[0], TenantRegistered)
        for event in decision:
            tenant.evolve(state, event)
            events.append(event)
        assert state.version == len(events)
        assert len(state.active_keys()) >= 1, "a registered tenant always keeps an active API key"
    assert fold(tenant.TenantState, tenant.evolve, events) == state


@st.composite
def console_session_commands(draw: Any) -> list[Any]:
    """Sign-ins (with live, revoked or unknown keys, at moving times), sign-outs and revocations."""
    commands: list[Any] = [tenant.RegisterTenant(name="acme", key_id="k0", key_hash="h0")]
    for n in range(1, draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["open", "open", "close", "close", "issue", "revoke"]))
        hour = draw(st.integers(0, 23))
        if kind == "open":
            key = f"k{draw(st.integers(0, n))}"
            ttl = draw(st.integers(1, 5))
            commands.append(
                tenant.OpenConsoleSession(
                    session_id=f"s{draw(st.integers(0, n))}", key_id=key, secret_hash=f"x{n}",
                    opened_at=f"2026-01-01T{hour:02d}:00:00Z",
                    expires_at=f"2026-01-01T{min(23, hour + ttl):02d}:00:00Z",
                )
            )  # fmt: skip
        elif kind == "close":
            commands.append(tenant.CloseConsoleSession(session_id=f"s{draw(st.integers(0, n))}"))
        elif kind == "issue":
            commands.append(tenant.IssueApiKey(key_id=f"k{n}", key_hash=f"h{n}"))
        else:
            commands.append(tenant.RevokeApiKey(key_id=f"k{draw(st.integers(0, n))}"))
    return commands


@settings(max_examples=100, deadline=None)
@given(console_session_commands())
def test_console_sessions_open_on_live_keys_close_once_and_replay(commands: list[Any]) -> None:
    state, events = tenant.TenantState(), []
    for command in commands:
        before = copy.deepcopy(state)
        try:
            decision = tenant.decide(state, command)
        except DomainError as exc:
            assert state == before
            if isinstance(command, tenant.OpenConsoleSession):
                key = before.keys.get(command.key_id)
                expired = command.expires_at <= command.opened_at
                assert key is None or key.revoked or command.session_id in before.sessions or expired, exc
            elif isinstance(command, tenant.CloseConsoleSession):
                assert command.session_id not in before.sessions and isinstance(exc, errors.SessionNotFound)
            continue
        assert not isinstance(decision, Unchanged) or isinstance(command, tenant.RevokeApiKey)
        for event in [] if isinstance(decision, Unchanged) else decision:
            tenant.evolve(state, event)
            events.append(event)
        if isinstance(command, tenant.OpenConsoleSession):
            opened = state.sessions[command.session_id]
            assert (opened.key_id, opened.secret_hash) == (command.key_id, command.secret_hash)
            mine = [s for s in state.sessions.values() if s.key_id == command.key_id]
            assert all(s.expires_at > command.opened_at for s in mine), "the key's expired ones are dropped"
            oldest = next(iter(state.sessions.values()))
            assert oldest.expires_at > command.opened_at, "the tenant's oldest expired ones are dropped"
        # each key's index names exactly its open sessions, oldest first, never more than the cap
        assert {sid for ids in state.key_sessions.values() for sid in ids} == set(state.sessions)
        for key_id, ids in state.key_sessions.items():
            assert len(ids) <= tenant.MAX_SESSIONS_PER_KEY
            assert all(state.sessions[sid].key_id == key_id for sid in ids)
        if isinstance(command, tenant.CloseConsoleSession):
            assert command.session_id not in state.sessions, "a closed session is gone"
    assert fold(tenant.TenantState, tenant.evolve, events) == state


def test_a_sign_in_forgets_the_tenants_expired_sessions_whatever_their_key() -> None:
    state = tenant.TenantState()
    commands: list[Any] = [
        tenant.RegisterTenant(name="acme", key_id="k0", key_hash="h0"),
        tenant.IssueApiKey(key_id="k1", key_hash="h1"),
        *(
            tenant.OpenConsoleSession(
                session_id=f"s{n}", key_id="k0", secret_hash=f"x{n}",
                opened_at=f"2026-01-01T00:{n}0:00Z", expires_at=f"2026-01-01T01:{n}0:00Z",
            )
            for n in range(2)
        ),
        tenant.OpenConsoleSession(
            session_id="s9", key_id="k1", secret_hash="x9",
            opened_at="2026-01-01T02:30:00Z", expires_at="2026-01-01T09:00:00Z",
        ),
    ]  # fmt: skip
    for command in commands:
        for event in tenant.decide(state, command):  # type: ignore[union-attr]
            tenant.evolve(state, event)
    assert list(state.sessions) == ["s9"]  # k0's expired before k1 signed in: k0 never signed in again
    assert state.key_sessions == {"k0": {}, "k1": {"s9": True}}


def test_a_sign_in_past_the_cap_closes_the_keys_oldest_session() -> None:
    state = tenant.TenantState()
    for event in tenant.decide(state, tenant.RegisterTenant(name="acme", key_id="k0", key_hash="h0")):  # type: ignore[union-attr]
        tenant.evolve(state, event)
    for n in range(tenant.MAX_SESSIONS_PER_KEY + 1):
        command = tenant.OpenConsoleSession(
            session_id=f"s{n}", key_id="k0", secret_hash=f"x{n}",
            opened_at="2026-01-01T00:00:00Z", expires_at="2026-01-01T08:00:00Z",
        )  # fmt: skip
        for event in tenant.decide(state, command):  # type: ignore[union-attr]
            tenant.evolve(state, event)
    assert "s0" not in state.sessions and f"s{tenant.MAX_SESSIONS_PER_KEY}" in state.sessions
    assert len(state.sessions) == tenant.MAX_SESSIONS_PER_KEY
