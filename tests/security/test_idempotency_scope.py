"""Idempotency keys belong to the credential's principal, and a replay is answered only to a
caller who may run the command now (issue 8, defects 3 and 5; both backends).

A user's keys are their own; a tenant's API keys share one scope (a backend that retries
through another of its keys after a rotation is still recognised); the admin token has its
own, which ``POST /v1/tenants`` honours.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.security.common import admin
from tests.support import Server, Tenant, bearer, new_tenant


def answer(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def refused(r: httpx.Response, status: int, code: str, rule: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = answer(r, status)["error"]
    assert error["code"] == code, error
    if rule is not None:
        assert error["details"].get("rule") == rule, error
    return error


@dataclass
class Room:
    """A tenant with users alice (owner of channel ``c``), bob (a member) and mallory (not one)."""

    client: httpx.Client
    tenant: Tenant
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return self.tenant.headers() if who == "tenant" else bearer(self.tokens[who])

    def post(self, who: str, body: dict[str, Any], key: str, path: str = "/v1/channels/c/messages") -> httpx.Response:
        headers = {**self.headers(who), "Idempotency-Key": key}
        return self.client.post(f"{self.tenant.url}{path}", json=body, headers=headers)

    def history(self, position: int) -> list[tuple[str, str]]:
        """``(author, text)`` of channel ``c``, newest first, once the read model has ``position``."""
        r = self.client.get(
            f"{self.tenant.url}/v1/channels/c/messages",
            params={"min_position": position},
            headers=self.tenant.headers(),
        )
        return [(m["author_id"], m["text"]) for m in answer(r, 200)["messages"]]


@pytest.fixture
def room(server: Server) -> Any:
    with httpx.Client(timeout=30) as client:
        tenant = new_tenant(client, server.url)
        tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob", "mallory")}
        room = Room(client, tenant, tokens)
        answer(room.post("alice", {"channel_id": "c", "name": "c", "members": ["bob"]}, "setup", "/v1/channels"), 201)
        yield room


# --- defect 3: keys are per principal, permission comes first --------------------------------
def test_a_member_sending_anothers_key_and_body_gets_his_own_message(room: Room) -> None:
    alices = answer(room.post("alice", {"text": "hello"}, "k-1"), 201)
    bobs = answer(room.post("bob", {"text": "hello"}, "k-1"), 201)
    assert bobs["message_id"] != alices["message_id"]
    assert room.history(bobs["position"]) == [("bob", "hello"), ("alice", "hello")]


def test_a_non_member_sending_a_used_key_is_refused_as_a_non_member(room: Room) -> None:
    alices = answer(room.post("alice", {"text": "hello"}, "k-1"), 201)
    for body in ({"text": "hello"}, {"text": "something else"}):
        r = room.post("mallory", body, "k-1")
        refused(r, 403, "forbidden", "not_a_member")
        assert alices["message_id"] not in r.text and alices["event_id"] not in r.text


def test_another_principal_with_the_same_key_and_another_body_writes_its_own(room: Room) -> None:
    answer(room.post("alice", {"text": "first"}, "k-1"), 201)
    answer(room.post("bob", {"text": "bob's own"}, "k-1"), 201)
    backend = answer(room.post("tenant", {"text": "for alice", "user_id": "alice"}, "k-1"), 201)
    assert room.history(backend["position"]) == [("alice", "for alice"), ("bob", "bob's own"), ("alice", "first")]


def test_the_owners_write_succeeds_after_a_member_used_her_key_first(room: Room) -> None:
    bobs = answer(room.post("bob", {"text": "bob was first"}, "owner-key"), 201)
    alices = answer(room.post("alice", {"text": "the owner's post"}, "owner-key"), 201)
    assert alices["message_id"] != bobs["message_id"]
    answer(room.post("bob", {"text": "again"}, "add-key"), 201)
    added = answer(room.post("alice", {"user_id": "mallory"}, "add-key", "/v1/channels/c/members"), 201)
    assert room.history(added["position"]) == [
        ("bob", "again"),
        ("alice", "the owner's post"),
        ("bob", "bob was first"),
    ]


def test_the_same_principal_gets_the_first_result_or_409_for_another_body(room: Room) -> None:
    first = answer(room.post("alice", {"text": "once"}, "k-1"), 201)
    assert answer(room.post("alice", {"text": "once"}, "k-1"), 200) == first
    refused(room.post("alice", {"text": "twice"}, "k-1"), 409, "conflict", "idempotency_key_reused")
    # a tenant's API keys share one scope: a retry through a newly issued key is recognised
    backend = answer(room.post("tenant", {"text": "from the backend", "user_id": "bob"}, "k-2"), 201)
    issued = answer(room.post("tenant", {"name": "rotated"}, "issue-1", "/v1/api-keys"), 201)
    rotated = Tenant(room.tenant.url, room.tenant.tenant_id, issued["api_key"])
    again = room.client.post(
        f"{room.tenant.url}/v1/channels/c/messages",
        json={"text": "from the backend", "user_id": "bob"},
        headers={**rotated.headers(), "Idempotency-Key": "k-2"},
    )
    assert answer(again, 200) == backend
    assert room.history(backend["position"]) == [("bob", "from the backend"), ("alice", "once")]


def test_a_replay_is_refused_once_the_caller_may_no_longer_run_it(room: Room) -> None:
    bobs = answer(room.post("bob", {"text": "before"}, "k-1"), 201)
    removed = room.client.delete(f"{room.tenant.url}/v1/channels/c/members/bob", headers=room.headers("alice"))
    answer(removed, 200)
    r = room.post("bob", {"text": "before"}, "k-1")
    refused(r, 403, "forbidden", "not_a_member")
    assert bobs["message_id"] not in r.text


# --- defect 5: POST /v1/tenants honours Idempotency-Key ---------------------------------------
def create_tenant(url: str, body: dict[str, Any], key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/tenants", json=body, headers={**admin(), "Idempotency-Key": key}, timeout=30)


def test_a_retried_tenant_creation_answers_with_the_first_tenant(server: Server) -> None:
    key = f"tenant-{uuid.uuid4()}"
    first = answer(create_tenant(server.url, {"name": "Once"}, key), 201)
    retry = answer(create_tenant(server.url, {"name": "Once"}, key), 200)
    assert (retry["tenant_id"], retry["key_id"], retry["event_id"]) == (
        first["tenant_id"],
        first["key_id"],
        first["event_id"],
    )
    assert retry["api_key"] is None
    refused(create_tenant(server.url, {"name": "Other"}, key), 409, "conflict", "idempotency_key_reused")
    first_key = Tenant(server.url, first["tenant_id"], first["api_key"])
    with httpx.Client(timeout=30) as client:
        r = client.put(f"{server.url}/v1/users/u1", json={"name": "u"}, headers=first_key.headers())
        registered = answer(r, 201)
        events = client.get(
            f"{server.url}/v1/events",
            params={"min_position": registered["position"]},
            headers=first_key.headers(),
        )
    recorded = [e["type"] for e in answer(events, 200)["events"] if not e["stream"].startswith("billing:")]
    assert recorded == ["TenantRegistered", "ApiKeyIssued", "UserRegistered"]  # the tenant's own (its plan aside)


def test_concurrent_identical_tenant_creations_create_one_tenant(server: Server) -> None:
    key = f"tenant-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: create_tenant(server.url, {"name": "Burst"}, key), range(5)))
    assert sorted(a.status_code for a in answers) == [200] * 4 + [201], [a.text for a in answers]
    assert len({a.json()["tenant_id"] for a in answers}) == 1
    assert [a.json()["api_key"] is None for a in answers].count(False) == 1
