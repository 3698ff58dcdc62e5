"""The first thing a tenant does: register users, open a channel, talk."""

from __future__ import annotations

import httpx

from tests.support import Tenant, bearer


def test_posted_message_appears_in_history_and_channel_list(client: httpx.Client, tenant: Tenant) -> None:
    alice = tenant.user(client, "alice")
    tenant.user(client, "bob")
    r = client.post(f"{tenant.url}/v1/channels", json={"channel_id": "general", "name": "General", "members": ["bob"]},
                    headers=bearer(alice))  # fmt: skip
    assert r.status_code == 201, r.text
    r = client.post(f"{tenant.url}/v1/channels/general/messages", json={"text": "hello"}, headers=bearer(alice))
    assert r.status_code == 201, r.text
    position = r.json()["position"]
    r = client.get(f"{tenant.url}/v1/channels/general/messages", params={"min_position": position},
                   headers=bearer(alice))  # fmt: skip
    assert [m["text"] for m in r.json()["messages"]] == ["hello"]
    r = client.get(f"{tenant.url}/v1/channels", params={"min_position": position}, headers=tenant.headers())
    assert [c["channel_id"] for c in r.json()["channels"]] == ["general"]
