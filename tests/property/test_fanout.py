"""Gapless websocket resume (``streams/fanout.py``) under random interleavings.

A subscriber resumes a channel from ``since_seq`` while the channel keeps moving: live events
reach the node's :class:`Hub` in commit order, and the log's readable copy (the SQLite log
embedded, the event index on Kafka) catches up on its own schedule, before or after the hub.
The replay below does what ``api.ws.Session.subscribe``/``_replay`` do with the real
:class:`Subscription`: register first (live events buffer), send history from the readable
copy until it reaches both the head seen at subscribe time and the seq before the first
buffered live event, then ``go_live``. Whatever the interleaving, the socket is sent every
later event exactly once and in order. A socket whose queue overflows is closed (1013) with
a gapless prefix and resumes from its last seq; a removal of the subscriber is delivered and
then ends the subscription, with nothing after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Event
from streams.fanout import REVOKING, Hub, Subscription, Wire, event_frame

TENANT, CHANNEL, USER = "t1", "c", "bob"


def make_event(seq: int, removal_at: int | None) -> Event:
    removed = seq == removal_at
    return Event(
        event_id=f"e{seq}",
        tenant_id=TENANT,
        stream=f"channel:{CHANNEL}",
        seq=seq,
        position=seq * 3,
        type="MemberRemoved" if removed else "MessagePosted",
        schema_version=1,
        occurred_at="2026-01-01T00:00:00.000Z",
        payload={"user_id": USER} if removed else {"message_id": f"m{seq}", "text": "x" * (seq % 7)},
    )


def seq_of(frame: str) -> int:
    seq: int = orjson.loads(frame)["seq"]
    return seq


@dataclass
class Channel:
    """Events 1..n; how far the hub has been told of them, and how far the log can be read."""

    events: list[Event]
    hub: Hub = field(default_factory=Hub)
    published: int = 0
    readable: int = 0

    def publish(self) -> None:
        if self.published < len(self.events):
            self.published += 1
            self.hub.publish([self.events[self.published - 1]])

    def index(self) -> None:
        self.readable = min(self.readable + 1, len(self.events))


@dataclass
class Socket:
    """One websocket: a bounded queue of frames (``pending``) that its client drains."""

    capacity: int
    pending: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)

    def send(self, frame: Wire) -> bool:
        if len(self.pending) >= self.capacity:
            return False  # api.ws: the outbox is full, the socket is closed with 1013
        self.pending.append(seq_of(frame.text))
        return True

    def drain(self) -> None:
        self.delivered += self.pending
        self.pending = []

    @property
    def sent(self) -> list[int]:
        return self.delivered + self.pending


class Attempt:
    """One subscription on one socket, from ``since`` with the channel's head at ``head``."""

    def __init__(self, channel: Channel, since: int, head: int, limit: int, budget: int, capacity: int) -> None:
        self.channel, self.since, self.last, self.head = channel, since, since, head
        self.socket = Socket(capacity)
        self.closed = False  # overflowed: closed with 1013
        self.revoked: list[str] = []
        self.sub = Subscription(
            TENANT, CHANNEL, USER, send=self.socket.send, overflow=self.overflow, revoke=self.revoke,
            limit=limit, budget=budget,
        )  # fmt: skip
        channel.hub.add(self.sub)

    @property
    def active(self) -> bool:
        return not self.closed and not self.revoked

    def overflow(self) -> None:
        self.closed = True
        self.channel.hub.remove(self.sub)

    def revoke(self, sub: Subscription, reason: str) -> None:
        self.revoked.append(reason)
        self.channel.hub.remove(sub)

    def replay(self, page: int) -> None:
        """One page of history, as ``api.ws.Session._replay`` reads it, then live if caught up."""
        if not self.active or self.sub.live:
            return
        for event in self.channel.events[self.last : min(self.channel.readable, self.last + page)]:
            if len(self.socket.pending) >= self.socket.capacity:
                return  # history waits for the socket to drain: it is paced by the reader
            assert self.socket.send(Wire(event_frame(event), event=True))
            self.last = event.seq
            if event.seq > self.head and event.type in REVOKING and event.payload.get("user_id") == USER:
                self.sub.revoke_at = event.seq
                self.go_live()
                return
        target = max(self.head, self.sub.buffer[0][0] - 1 if self.sub.buffer else 0)
        if self.last >= target:
            self.go_live()

    def go_live(self) -> None:
        if not self.sub.go_live(self.last):
            self.overflow()


@dataclass
class Scenario:
    n: int  # events in the channel
    published: int  # already given to the hub when the subscriber arrives
    readable: int  # already readable in the log then
    head: int  # the channel's head seq the subscriber is told (the aggregate leads both copies)
    since: int  # the client's since_seq
    removal: int | None  # the seq at which the subscriber is removed from the channel
    limit: int  # live events a replaying subscription may buffer: frames
    budget: int  # and bytes (sys.getsizeof of the frames)
    capacity: int  # frames the socket's queue holds
    steps: list[str | int]


# an interleaving step: publish the next event to the hub, make the next one readable in the
# log, replay a page of history (of 1 to 4 events), or let the client read its queue
STEPS = st.lists(
    st.one_of(st.sampled_from(["publish", "index", "drain"]), st.integers(min_value=1, max_value=4)), max_size=80
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(min_value=0, max_value=30))
    published = draw(st.integers(min_value=0, max_value=n))
    readable = draw(st.integers(min_value=0, max_value=n))
    head = draw(st.integers(min_value=max(published, readable), max_value=n))
    removal = draw(st.integers(min_value=head + 1, max_value=n + 1))  # a member when subscribing
    return Scenario(
        n, published, readable, head,
        since=draw(st.integers(min_value=0, max_value=head)),
        removal=removal if removal <= n and draw(st.booleans()) else None,
        limit=draw(st.integers(min_value=1, max_value=12)),
        budget=draw(st.sampled_from([10**9, 400, 1000])),
        capacity=draw(st.integers(min_value=1, max_value=8)),
        steps=draw(STEPS),
    )  # fmt: skip


def play(channel: Channel, attempt: Attempt, steps: list[str | int]) -> None:
    for step in steps:
        if step == "publish":
            channel.publish()
        elif step == "index":
            channel.index()
        elif step == "drain":
            attempt.socket.drain()
        else:
            attempt.replay(step)


def open_channel(s: Scenario) -> Channel:
    """The channel as the subscriber finds it."""
    channel = Channel([make_event(seq, s.removal) for seq in range(1, s.n + 1)])
    for _ in range(s.published):
        channel.publish()
    channel.readable = s.readable
    return channel


def run(s: Scenario) -> tuple[list[Attempt], Channel]:
    """Play the interleaving, then let everything settle. After an overflow the client
    resubscribes from the last seq it received, as a client told 1013 does, unless it is no
    longer a member by then (the subscribe is refused)."""
    channel = open_channel(s)
    attempts = [Attempt(channel, s.since, s.head, s.limit, s.budget, s.capacity)]
    # settle: every event reaches the log and the hub, and the client keeps reading
    settle: list[str | int] = [step for _ in range(2 * s.n + 2) for step in (4, "drain", "publish", "index", "drain")]
    play(channel, attempts[0], s.steps + settle)
    while attempts[-1].closed and len(attempts) <= s.n + 2:
        closed = attempts[-1]
        closed.socket.drain()  # what the client read before the close; the rest went with the socket
        resume = closed.socket.delivered[-1] if closed.socket.delivered else closed.since
        head = max(channel.published, channel.readable)
        if s.removal is not None and s.removal <= head:
            break  # no longer a member: the subscribe is refused (403 frame)
        attempts.append(Attempt(channel, resume, head, s.limit, s.budget, s.capacity))
        play(channel, attempts[-1], settle)
    return attempts, channel


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_resume_sends_every_later_event_once_in_order_whatever_the_interleaving(s: Scenario) -> None:
    attempts, channel = run(s)
    received: list[int] = []
    for attempt in attempts:
        start = received[-1] if received else s.since
        sent = attempt.socket.sent
        # each socket is sent a gapless run from where its client resumed: no gap, no duplicate
        assert sent == list(range(start + 1, start + 1 + len(sent))), (start, sent)
        attempt.socket.drain()
        received += attempt.socket.delivered
    last = attempts[-1]
    end = s.removal if s.removal is not None else s.n
    if last.closed:  # overflowed, then refused: it had been removed before it could resume
        assert s.removal is not None and received == list(range(s.since + 1, len(received) + s.since + 1))
        assert received == [] or received[-1] < s.removal
        return
    assert received == list(range(s.since + 1, end + 1)), (s.since, end, received)
    if s.removal is not None:
        assert len(last.revoked) == 1, "a removal is delivered, then ends the subscription once"
    else:
        assert last.revoked == [] and last.sub.live
    assert channel.hub.subscribers(TENANT, CHANNEL) == (0 if s.removal is not None else 1)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_subscriber_that_cannot_keep_up_is_closed_not_buffered_without_bound(s: Scenario) -> None:
    """Whatever the interleaving, a subscription never holds more than its frame limit and
    byte budget of buffered live events: past them it overflows (and is closed)."""
    channel = open_channel(s)
    attempt = Attempt(channel, s.since, s.head, s.limit, s.budget, s.capacity)
    for step in s.steps + ["publish"] * s.n:
        play(channel, attempt, [step])
        if not attempt.closed:
            assert len(attempt.sub.buffer) <= s.limit and attempt.sub.buffered <= s.budget
            assert len(attempt.socket.pending) <= s.capacity
    assert channel.hub.subscribers(TENANT, CHANNEL) == (1 if attempt.active else 0)
