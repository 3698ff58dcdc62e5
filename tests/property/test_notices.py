"""Property test of the device notices' socket registry (streams/notices.py): whatever the order
of sockets opening and closing, a ``prekeys_low`` frame reaches exactly the sockets of its user
that are open, once each, and only for a pool that fell under the threshold."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.devices import LOW_PREKEYS
from domain.events import Event
from streams.notices import UserNotices

USERS = ["alice", "bob"]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.sampled_from(USERS), st.integers(0, 3)),
        st.tuples(st.just("close"), st.sampled_from(USERS), st.integers(0, 3)),
        st.tuples(st.just("claim"), st.sampled_from(USERS), st.integers(0, LOW_PREKEYS + 2)),
    ),
    max_size=40,
)


def claimed(user_id: str, remaining: int, seq: int) -> Event:
    return Event(
        event_id=f"e{seq}", tenant_id="t", stream=f"user:{user_id}", seq=seq, position=seq,
        type="OneTimePrekeyClaimed", schema_version=1, occurred_at="2026-01-01T00:00:00.000Z",
        payload={"device_id": "phone", "key_id": seq, "public_key": "k", "remaining": remaining},
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(steps=steps)
def test_a_low_prekey_notice_reaches_each_open_socket_of_its_user_once(steps: list[tuple[str, str, int]]) -> None:
    notices = UserNotices()
    inbox: dict[tuple[str, int], list[dict[str, object]]] = {}
    sends = {}
    for user_id in USERS:
        for n in range(4):
            box = inbox.setdefault((user_id, n), [])
            sends[(user_id, n)] = lambda frame, box=box: box.append(orjson.loads(frame)) is None
    open_: set[tuple[str, int]] = set()
    for seq, (kind, user_id, n) in enumerate(steps, start=1):
        if kind == "open" and (user_id, n) not in open_:
            notices.add("t", user_id, sends[(user_id, n)])
            open_.add((user_id, n))
        elif kind == "close":
            notices.remove("t", user_id, sends[(user_id, n)])  # closing a closed socket is a no-op
            open_.discard((user_id, n))
        elif kind == "claim":
            before = {key: len(box) for key, box in inbox.items()}
            notices.publish([claimed(user_id, n, seq)])
            for key, box in inbox.items():
                grew = len(box) - before[key]
                assert grew == (1 if key in open_ and key[0] == user_id and n < LOW_PREKEYS else 0), key
                if grew:
                    assert box[-1] == {"type": "prekeys_low", "user_id": user_id, "device_id": "phone",
                                       "remaining": n, "threshold": LOW_PREKEYS}  # fmt: skip
