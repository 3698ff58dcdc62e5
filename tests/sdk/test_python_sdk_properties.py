"""Property tests of the SDK's pure state machines: the timeline, the outbox, backoff, the
typing throttle and what to do after a close."""

from __future__ import annotations

import itertools
import random
import sqlite3
import tempfile
from pathlib import Path

from caas_client import Ack, Backoff, MemoryStore, OutboxState, Pending, SqliteStore, Step, Timeline, Verdict, next_step
from caas_client.realtime import MAX_IMMEDIATE_RESUMES
from caas_client.throttle import Throttle
from hypothesis import given, settings
from hypothesis import strategies as st


# --- timeline --------------------------------------------------------------------------------
@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[int]]:
    """What a client can receive for a channel of ``head`` events across reconnects: runs that
    each resume from some seq already delivered (a replay overlapping what was seen), with
    duplicates and stragglers, and a final run that reaches the head."""
    head = draw(st.integers(0, 60))
    seqs: list[int] = []
    done = 0
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, done))  # a resume from a seq the client already had
        end = draw(st.integers(start, head))
        seqs += range(start + 1, end + 1)
        seqs += draw(st.lists(st.integers(1, max(1, head)), max_size=3)) if head else []
        done = max(done, end)
    seqs += range(done + 1, head + 1)
    return head, seqs


@given(deliveries())
def test_timeline_delivers_every_seq_once_in_order_whatever_the_replays(case: tuple[int, list[int]]) -> None:
    head, seqs = case
    timeline = Timeline(seq=0)
    delivered = [s for s in seqs if timeline.offer(s) is Verdict.DELIVER]
    # every run starts at a delivered seq, so nothing is ever missing: no gap is reported
    assert delivered == list(range(1, head + 1))
    assert timeline.since_seq == head


@given(st.integers(0, 50), st.lists(st.integers(1, 80), max_size=60))
def test_timeline_never_delivers_out_of_order_and_asks_to_resume_at_a_gap(start: int, seqs: list[int]) -> None:
    timeline = Timeline(seq=start)
    delivered = []
    for seq in seqs:
        before = timeline.seq
        verdict = timeline.offer(seq)
        if verdict is Verdict.DELIVER:
            delivered.append(seq)
        elif verdict is Verdict.GAP:
            assert before is not None and seq > before + 1 and timeline.since_seq == before
        else:
            assert before is not None and seq <= before
    assert delivered == list(range(start + 1, start + 1 + len(delivered)))


@given(st.integers(0, 100), st.lists(st.integers(1, 120), max_size=20))
def test_live_only_timeline_starts_at_the_head_it_was_given(head: int, seqs: list[int]) -> None:
    timeline = Timeline()
    timeline.subscribed(head)
    assert timeline.caught_up and timeline.since_seq == head
    for seq in seqs:
        timeline.offer(seq)
    assert timeline.seq is not None and timeline.seq >= head


# --- outbox ----------------------------------------------------------------------------------
ops = st.lists(
    st.tuples(st.sampled_from(["enqueue", "http_ack", "event_ack", "reject", "event_other"]), st.integers(0, 7)),
    max_size=50,
)


def check_outbox(state: OutboxState, steps: list[tuple[str, int]]) -> None:
    enqueued: list[str] = []
    firsts: dict[str, int] = {}
    for n, (op, i) in enumerate(steps):
        cmid = f"cm-{i}"
        if op == "enqueue":
            fresh = state.enqueue(Pending(cmid, "room", f"text {i}"))
            assert fresh == (cmid not in enqueued)
            if fresh:
                enqueued.append(cmid)
        elif op == "http_ack":
            if state.acknowledge(Ack(cmid, "room", f"m{i}", n + 1, n + 100)):
                firsts[cmid] = firsts.get(cmid, 0) + 1
        elif op == "event_ack":
            event = {"type": "MessagePosted", "seq": n + 1, "payload": {"client_msg_id": cmid, "message_id": f"m{i}"}}
            if state.observe(event) is not None:
                firsts[cmid] = firsts.get(cmid, 0) + 1
        elif op == "reject":
            state.reject(cmid, "forbidden")
        else:  # someone else's message, or another event type: never acknowledges ours
            assert state.observe({"type": "MessagePosted", "seq": n, "payload": {"client_msg_id": "theirs"}}) is None
            assert state.observe({"type": "MessageEdited", "seq": n, "payload": {"client_msg_id": cmid}}) is None
        pending, acked, rejected = set(state.pending), set(state.acked), set(state.rejected)
        assert pending | acked | rejected == set(enqueued)  # nothing dropped
        assert not (pending & acked or pending & rejected or acked & rejected)  # nothing twice
        assert [p.client_msg_id for p in state.store.load()] == [c for c in enqueued if c in pending]  # in order
        nxt = state.next()
        assert (nxt.client_msg_id if nxt else None) == next((c for c in enqueued if c in pending), None)
    assert all(count == 1 for count in firsts.values())  # each acknowledged once, by HTTP or the socket
    assert set(firsts) == set(state.acked)


@given(ops)
def test_outbox_acknowledges_each_message_once_and_never_drops_one(steps: list[tuple[str, int]]) -> None:
    check_outbox(OutboxState(MemoryStore()), steps)


@settings(deadline=None)  # a file per example: its time varies with the disk
@given(ops)
def test_sqlite_outbox_keeps_the_pending_messages_across_a_restart(steps: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.sqlite"
        store = SqliteStore(path)
        state = OutboxState(store)
        check_outbox(state, steps)
        store.close()
        reopened = SqliteStore(path)  # the app restarts: the same messages wait, in order
        assert list(OutboxState(reopened).pending.values()) == list(state.pending.values())
        reopened.close()
        assert sqlite3.connect(path).execute("SELECT count(*) FROM outbox").fetchone()[0] == len(state.pending)


# --- backoff, throttle, close codes ----------------------------------------------------------
@given(
    st.floats(0.001, 5),
    st.floats(0.01, 120),
    st.floats(1.0, 4.0),
    st.integers(0, 2**32),
    st.lists(st.booleans(), max_size=80),
)
def test_backoff_delays_stay_within_the_growing_capped_ceiling(
    base: float, cap: float, factor: float, seed: int, outcomes: list[bool]
) -> None:
    backoff = Backoff(base=base, cap=cap, factor=factor, rng=random.Random(seed))
    for ok in outcomes:
        if ok:
            backoff.reset()
            assert backoff.attempt == 0
            continue
        attempt = backoff.attempt
        ceiling = backoff.ceiling(attempt)
        assert ceiling <= cap and ceiling <= backoff.ceiling(attempt + 1)
        assert 0 <= backoff.failed() <= ceiling
        assert backoff.attempt == attempt + 1


@given(st.floats(0.1, 10), st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=40))
def test_typing_is_sent_at_most_once_per_window_per_channel(window: float, steps: list[tuple[str, float]]) -> None:
    throttle = Throttle(window)
    now = 0.0
    sent: dict[str, list[float]] = {}
    for key, dt in steps:
        now += dt
        if throttle.allow(key, now):
            sent.setdefault(key, []).append(now)
        else:
            assert now - sent[key][-1] < window  # refused only inside the window of the last one sent
    for times in sent.values():
        assert all(b - a >= window for a, b in itertools.pairwise(times))


@given(st.lists(st.sampled_from([None, 1000, 1001, 1006, 1011, 1012, 1013]), min_size=1, max_size=30))
def test_closes_without_progress_reconnect_at_once_at_most_once_in_a_row(codes: list[int | None]) -> None:
    # a reconnect loop that never delivers: replay next_step as Realtime does
    immediate, at_once_in_a_row, most = 0, 0, 0
    for code in codes:
        step = next_step(code, None, immediate)
        assert step in (Step.RESUME_NOW, Step.BACK_OFF)
        if step is Step.RESUME_NOW:
            assert code == 1013
            immediate += 1
            at_once_in_a_row += 1
        else:
            at_once_in_a_row = 0
        most = max(most, at_once_in_a_row)
    assert most <= MAX_IMMEDIATE_RESUMES


@given(st.sampled_from([None, "unauthenticated", "quota_exceeded", "rate_limited", "brand_new"]), st.integers(0, 5))
def test_a_1008_refreshes_the_token_only_when_the_token_was_refused(last_error: str | None, immediate: int) -> None:
    refreshes = next_step(1008, last_error, immediate) is Step.REFRESH_TOKEN
    assert refreshes == (last_error in (None, "unauthenticated"))
    assert next_step(1009, last_error, immediate) is Step.FAIL


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=20), st.data())
def test_a_deferred_message_goes_behind_other_channels_and_each_channel_keeps_its_order(
    channels: list[str], data: st.DataObject
) -> None:
    state = OutboxState()
    items = [Pending(f"cm-{i}", c, f"t{i}") for i, c in enumerate(channels)]
    for item in items:
        state.enqueue(item)
    failing = state.next()
    assert failing is not None
    for _ in range(data.draw(st.integers(1, 3))):
        state.defer(failing.client_msg_id)
    order = list(state.pending.values())
    for c in set(channels):  # every channel's messages in the order they were sent
        assert [p for p in order if p.channel_id == c] == [p for p in items if p.channel_id == c]
    others = [p for p in items if p.channel_id != failing.channel_id]
    assert order[: len(others)] == others  # the other channels go first
