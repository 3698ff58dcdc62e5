"""``as_of`` on a channel and its history, through the real server on both backends: the channel
as it was at a log position or a time (docs/analyst.md, Time travel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import serving
from tests.e2e.test_api import Chat, err, ok
from tests.e2e.test_api import chat as chat  # the fixture: a tenant, four users and channel "c"
from tests.support import Tenant, bearer, new_tenant


def history(world: Chat, who: str = "tenant", **params: Any) -> dict[str, Any]:
    return world.get("/v1/channels/c/messages", who, **params)


def texts(page: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(m["message_id"], m["text"]) for m in page["messages"]]


def test_history_as_of_a_position_shows_messages_as_they_were_then(chat: Chat) -> None:
    first = chat.say("alice", "hi @bob and @carol.")
    second = chat.say("bob", "hello")
    ok(chat.post(f"/v1/channels/c/messages/{first['message_id']}/reactions", "bob", {"emoji": "👍"}))
    edited = ok(
        chat.call("PATCH", f"/v1/channels/c/messages/{first['message_id']}", "alice", json={"text": "hi all"}), 200
    )
    deleted = ok(chat.call("DELETE", f"/v1/channels/c/messages/{second['message_id']}", "bob"), 200)
    added = ok(chat.post("/v1/channels/c/members", "alice", {"user_id": "dave", "role": "member"}))

    then = history(chat, as_of=f"pos:{second['position']}")
    assert texts(then) == [(second["message_id"], "hello"), (first["message_id"], "hi @bob and @carol.")]
    old = then["messages"][1]
    assert old["mentions"] == ["bob", "carol"] and old["reactions"] == {} and old["edited_at"] is None
    assert (then["as_of"]["seq"], then["as_of"]["position"]) == (second["seq"], second["position"])

    later = history(chat, as_of=str(edited["position"]))  # a plain integer is a position too
    assert texts(later) == [(second["message_id"], "hello"), (first["message_id"], "hi all")]
    assert later["messages"][1]["reactions"] == {"👍": ["bob"]} and later["messages"][1]["edited_at"] is not None

    gone = history(chat, as_of=f"pos:{deleted['position']}")
    assert gone["messages"][0]["deleted"] and gone["messages"][0]["text"] is None

    members_then = chat.channel(as_of=f"pos:{deleted['position']}")["members"]
    members_now = chat.channel(as_of=f"pos:{added['position']}")["members"]
    assert "dave" not in {m["user_id"] for m in members_then}
    assert "dave" in {m["user_id"] for m in members_now}


def test_as_of_at_or_after_the_head_answers_what_the_live_routes_answer(chat: Chat) -> None:
    for n in range(5):
        chat.say(("alice", "bob")[n % 2], f"message {n} for @carol")
    posted = chat.say("carol", "last")
    ok(chat.post("/v1/channels/c/read", "carol", {"seq": posted["seq"]}), 200)
    head = 2**62
    live, past = chat.channel(), chat.channel(as_of=f"pos:{head}")
    assert past.pop("as_of")["seq"] == live["head_seq"]
    assert past == live
    for params in ({}, {"limit": 2}, {"after_seq": 0, "limit": 3}, {"before_seq": posted["seq"], "limit": 2}):
        live_page = history(chat, **params)
        past_page = history(chat, as_of=f"pos:{head}", **params)
        past_page.pop("as_of")
        assert past_page == live_page


def test_history_as_of_pages_like_the_live_history(chat: Chat) -> None:
    posted = [chat.say("alice", f"m{n}") for n in range(7)]
    chat.say("alice", "after the point")
    point = f"pos:{posted[-1]['position']}"
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"as_of": point, "limit": 3}
        if cursor is not None:
            params["before_seq"] = cursor
        page = history(chat, **params)
        seen += [m["text"] for m in page["messages"]]
        cursor = page["next_before_seq"]
        if cursor is None:
            break
    assert seen == [f"m{n}" for n in reversed(range(7))]
    forward = history(chat, as_of=point, after_seq=0, limit=4)
    assert [m["text"] for m in forward["messages"]] == ["m0", "m1", "m2", "m3"]
    assert forward["next_after_seq"] == posted[3]["seq"]


def test_as_of_a_time_includes_every_event_recorded_by_then(chat: Chat) -> None:
    for n in range(4):
        chat.say("bob", f"t{n}")
    events = [e for e in chat.events() if e["stream"] == "channel:c"]
    for event in (events[0], events[len(events) // 2], events[-1]):
        moment = event["occurred_at"]
        included = [e for e in events if e["occurred_at"] <= moment]
        channel = chat.channel(as_of=moment)
        assert channel["head_seq"] == channel["as_of"]["seq"] == len(included)
        page = history(chat, as_of=moment.replace("Z", "+00:00"))
        posted = [e["payload"]["text"] for e in included if e["type"] == "MessagePosted"]
        assert [m["text"] for m in page["messages"]] == posted[::-1]


def test_as_of_before_the_channel_existed_is_not_found(chat: Chat) -> None:
    err(chat.call("GET", "/v1/channels/c", "tenant", params={"as_of": "pos:0"}), 404, "not_found", "channel_not_found")
    r = chat.call("GET", "/v1/channels/c/messages", "tenant", params={"as_of": "2000-01-01T00:00:00Z"})
    err(r, 404, "not_found", "channel_not_found")


def test_a_user_token_never_reads_the_past_only_the_tenant_does(chat: Chat) -> None:
    """A deleted message, or the text before an edit, must stay out of end users' reach: as_of is
    the tenant API key's (the analyst's), and a user token asking with it is refused."""
    said = chat.say("alice", "my secret")
    edited = chat.say("alice", "first wording")
    ok(chat.call("DELETE", f"/v1/channels/c/messages/{said['message_id']}", "alice"), 200)
    ok(chat.call("PATCH", f"/v1/channels/c/messages/{edited['message_id']}", "alice", json={"text": "reworded"}), 200)
    point = f"pos:{edited['position']}"
    for who in ("alice", "bob"):  # the author and a member
        for path in ("/v1/channels/c/messages", "/v1/channels/c"):
            r = chat.call("GET", path, who, params={"as_of": point})
            error = err(r, 403, "forbidden", "as_of_tenant_only")
            assert "tenant" in error["message"] and "secret" not in r.text and "first wording" not in r.text
    # the live history shows a user the redacted message and the edit, never the old text
    live = chat.messages("bob")
    assert "my secret" not in str(live) and "first wording" not in str(live)
    # the tenant (the analyst) reads the past as it was
    assert [m["text"] for m in history(chat, as_of=point)["messages"]] == ["first wording", "my secret"]


def test_a_malformed_as_of_is_a_clear_422(chat: Chat) -> None:
    bad_times = ("2026-12-03T10:00:00", "2026-13-45T00:00:00Z", "9999-12-31T23:59:59-01:00")
    # before 1970: the log compares times as text, and year 999 would sort after 2026 (the present)
    bad_times += ("0999-06-01T00:00:00Z", "1969-12-31T23:59:59.999Z", "0001-01-01T00:00:00+00:00")
    for bad in ("yesterday", "pos:-1", "pos:", "", "9" * 25, *bad_times):
        for path in ("/v1/channels/c", "/v1/channels/c/messages"):
            error = err(chat.call("GET", path, "tenant", params={"as_of": bad}), 422, "invalid_request")
            assert "as_of" in error["message"]


def test_as_of_is_scoped_to_the_tenant(chat: Chat, client: httpx.Client, tenant: Tenant) -> None:
    said = chat.say("alice", "ours")
    other = new_tenant(client, tenant.url, "other")
    r = client.get(f"{other.url}/v1/channels/c/messages", params={"as_of": f"pos:{said['position']}"},
                   headers=other.headers())  # fmt: skip
    err(r, 404, "not_found", "channel_not_found")


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
def test_a_channel_too_large_for_the_nodes_budget_is_a_clear_422(backend: str, tmp_path: Path) -> None:
    """Its past is refused, every time, instead of folded on every ask; smaller channels still answer."""
    with serving(backend, tmp_path, {"CAAS_ASOF_CACHE_MB": "0.05"}) as server, httpx.Client(timeout=30) as client:
        tenant = new_tenant(client, server.url)
        ann = bearer(tenant.user(client, "ann"))

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            return ok(client.post(f"{server.url}{path}", json=body, headers=ann))

        for cid in ("big", "small"):
            post("/v1/channels", {"channel_id": cid, "name": cid})
        said = [post("/v1/channels/big/messages", {"text": f"{n} " + "x" * 3000}) for n in range(20)]
        small = post("/v1/channels/small/messages", {"text": "hi"})
        params = {"as_of": f"pos:{said[0]['position']}", "min_position": str(small["position"])}
        for _ in range(2):
            for path in ("/v1/channels/big/messages", "/v1/channels/big"):
                r = client.get(f"{server.url}{path}", params=params, headers=tenant.headers())
                error = err(r, 422, "invalid_request", "as_of_channel_too_large")
                assert "CAAS_ASOF_CACHE_MB" in error["message"]
        r = client.get(f"{server.url}/v1/channels/small/messages", params={"as_of": f"pos:{small['position']}"},
                       headers=tenant.headers())  # fmt: skip
        assert [m["text"] for m in ok(r, 200)["messages"]] == ["hi"]
