"""Presence converges to the truth of the sockets, whatever order they come and go in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import presence as p

TIMING = p.Timing(away_after=300.0, grace=10.0, node_timeout=5.0)
USERS = ["u1", "u2", "u3"]
NODES = ["n1", "n2"]

# A schedule step: (seconds later, action, connection number, user, node)
steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=3.0),
        st.sampled_from(["open", "close"]),
        st.integers(min_value=0, max_value=7),
        st.sampled_from(USERS),
        st.sampled_from(NODES),
    ),
    max_size=60,
)


def run(schedule: list[tuple[float, str, int, str, str]], tick: float = 0.25) -> tuple[p.PresenceState, dict, float]:
    """Apply a schedule with live nodes heartbeating every second; return the state, the
    model of which sockets are open, and the time of the last step."""
    state, now, next_beat, next_tick = p.PresenceState(), 0.0, 0.0, 0.0
    open_conns: dict[str, tuple[str, str]] = {}
    changes: list[p.Change] = []
    for delay, action, number, user, node in schedule:
        now += delay
        while next_beat <= now or next_tick <= now:
            if next_beat <= next_tick:
                for n in NODES:
                    held = [(c, "t", u, next_beat) for c, (u, nn) in open_conns.items() if nn == n]
                    p.heartbeat(state, n, next_beat, held)
                next_beat += 1.0
            else:
                changes += p.changes(state, next_tick, TIMING)
                next_tick += tick
        conn = f"{node}-{number}"
        if action == "open" and conn not in open_conns:
            open_conns[conn] = (user, node)
            p.opened(state, conn, "t", user, node, now)
        elif action == "close" and conn in open_conns:
            del open_conns[conn]
            p.closed(state, conn, now)
    return state, {"open": open_conns, "changes": changes}, now


def settle(
    state: p.PresenceState, open_conns: dict[str, tuple[str, str]], now: float, seconds: float
) -> list[p.Change]:
    changes = []
    t = now
    while t < now + seconds:
        t += 0.5
        for n in NODES:
            p.heartbeat(state, n, t, [(c, "t", u, t) for c, (u, nn) in open_conns.items() if nn == n])
        changes += p.changes(state, t, TIMING, sweep=True)
    return changes


@settings(max_examples=300, deadline=None)
@given(steps)
def test_churn_converges_to_who_has_a_socket_within_the_grace_period(schedule: list) -> None:
    state, model, now = run(schedule)
    settle(state, model["open"], now, TIMING.grace + 1)
    connected = {user for user, _ in model["open"].values()}
    for user in USERS:
        expected = "online" if user in connected else "offline"
        assert p.status(state, ("t", user), now + TIMING.grace + 1, TIMING) == expected
        assert p.devices(state, ("t", user)) == sum(1 for u, _ in model["open"].values() if u == user)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_reported_changes_never_repeat_a_status(schedule: list) -> None:
    state, model, now = run(schedule)
    changes = model["changes"] + settle(state, model["open"], now, TIMING.grace + 1)
    last: dict[str, str] = {}
    for change in changes:
        assert last.get(change.user_id, "offline") != change.status
        last[change.user_id] = change.status


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0.01, max_value=9.0))
def test_a_quick_reconnect_is_not_reported_as_offline(reconnects: int, gap: float) -> None:
    state = p.PresenceState()
    p.heartbeat(state, "n1", 0.0, [])
    p.opened(state, "c0", "t", "u1", "n1", 0.0)
    assert [c.status for c in p.changes(state, 0.1, TIMING)] == ["online"]
    now = 0.1
    for i in range(reconnects):
        p.closed(state, f"c{i}", now)
        now += gap / reconnects
        p.heartbeat(state, "n1", now, [])
        assert p.changes(state, now, TIMING) == []
        p.opened(state, f"c{i + 1}", "t", "u1", "n1", now)
        assert p.changes(state, now, TIMING) == []


def test_a_burst_of_reconnects_between_two_ticks_is_no_change_at_all() -> None:
    state = p.PresenceState()
    p.opened(state, "c0", "t", "u1", "n1", 0.0)
    assert len(p.changes(state, 0.0, TIMING)) == 1
    for i in range(10):
        p.closed(state, f"c{i}", 0.01 * i)
        p.opened(state, f"c{i + 1}", "t", "u1", "n1", 0.01 * i + 0.005)
    assert p.changes(state, 0.25, TIMING) == []


def test_users_of_a_dead_node_go_offline_after_its_heartbeat_stops() -> None:
    state = p.PresenceState()
    p.heartbeat(state, "n1", 0.0, [("c1", "t", "u1", 0.0)])
    p.heartbeat(state, "n2", 0.0, [("c2", "t", "u2", 0.0)])
    p.changes(state, 0.0, TIMING)
    t = 0.0
    offline_at = None
    while t < 30 and offline_at is None:
        t += 0.25
        p.heartbeat(state, "n2", t, [("c2", "t", "u2", t)])  # n1 died at 0 (kill -9): silent
        for change in p.changes(state, t, TIMING):
            if change.user_id == "u1" and change.status == "offline":
                offline_at = t
    assert offline_at is not None
    assert TIMING.grace <= offline_at <= TIMING.node_timeout + TIMING.grace + 0.5
    assert p.status(state, ("t", "u2"), t, TIMING) == "online"


def test_idle_sockets_make_a_user_away_and_activity_brings_them_back() -> None:
    state = p.PresenceState()
    p.opened(state, "c1", "t", "u1", "n1", 0.0)
    p.heartbeat(state, "n1", 400.0, [("c1", "t", "u1", 0.0)])
    assert [c.status for c in p.changes(state, 400.0, TIMING, sweep=True)] == ["away"]
    p.active(state, "c1", 401.0)
    p.heartbeat(state, "n1", 401.0, [("c1", "t", "u1", 401.0)])
    assert [c.status for c in p.changes(state, 401.0, TIMING)] == ["online"]


def test_tenants_with_the_same_user_id_have_separate_presence() -> None:
    state = p.PresenceState()
    p.opened(state, "c1", "t1", "u1", "n1", 0.0)
    assert p.status(state, ("t1", "u1"), 0.0, TIMING) == "online"
    assert p.status(state, ("t2", "u1"), 0.0, TIMING) == "offline"
