"""Examples of request and response bodies for ``/openapi.json``, by operation id.

``tests/e2e/test_contracts.py`` validates each against the model it illustrates, so an example
cannot drift from the schema it sits beside.
"""

from __future__ import annotations

from typing import Any

WRITTEN: dict[str, Any] = {"event_id": "0b7c9f6e2a1d4e5f8a9b0c1d2e3f4a5b", "position": 1017, "seq": 42}
# A device's real keys (the signature verifies), as PUT /v1/users/{user_id}/devices/{device_id} takes them
IDENTITY_KEY = "24G+77ymTiXzFi/W9V1r/OtwdD92wwZbLBMlAE+LqAI="
SIGNED_PREKEY = {
    "key_id": 1,
    "public_key": "kYq/KIUfZOp1Uftbe8R1fyYGhmOU/N8bQDXIsWVBTB0=",
    "signature": "qDFhuaNzwpH94OTficXDi1HeizwawIxTtsQzOs41UpD1AQ99CdHfJ2oRUT9Lp5j24jYumNunZzMZFD8Dh00sCg==",
}
ONE_TIME_PREKEYS = [
    {"key_id": 1, "public_key": "BQ83b4Wq6aV2WObUBKr1MZxzTkGIhkMARocKbvsH9Hg="},
    {"key_id": 2, "public_key": "ga34l5CS2TIRkGJ8WdCikLVZ7dY5lLgSXxLQCLMR+zY="},
]
BUNDLE = {"user_id": "bob", "device_id": "phone", "identity_key": IDENTITY_KEY, "signed_prekey": SIGNED_PREKEY,
          "one_time_prekey": ONE_TIME_PREKEYS[0]}  # fmt: skip

REQUESTS: dict[str, dict[str, Any]] = {
    "create_tenant": {"name": "Acme"},
    "create_api_key": {"name": "ci"},
    "set_allowed_origins": {"origins": ["https://app.example.com"]},
    "put_user": {"name": "Alice", "metadata": {"plan": "pro"}},
    "create_token": {"ttl_seconds": 3600},
    "create_channel": {"channel_id": "general", "name": "General", "members": ["alice", "bob"]},
    "add_member": {"user_id": "carol", "role": "member"},
    "post_message": {"text": "hello", "client_msg_id": "7f9c2b1e-1"},
    "edit_message": {"text": "hello, edited"},
    "add_reaction": {"emoji": "👍"},
    "move_read_marker": {"seq": 42},
    "typing": {},
    "mute": {"user_id": "bob", "until": "2026-01-02T00:00:00Z"},
    "ban": {"user_id": "mallory", "reason": "spam"},
    "put_plan": {"plan": "pro"},
    "put_device": {"identity_key": IDENTITY_KEY, "signed_prekey": SIGNED_PREKEY, "one_time_prekeys": ONE_TIME_PREKEYS},
    "add_prekeys": {"one_time_prekeys": ONE_TIME_PREKEYS[1:]},
    "rotate_signed_prekey": SIGNED_PREKEY,
}

RESPONSES: dict[str, dict[str, Any]] = {
    "create_tenant": {**WRITTEN, "seq": 2, "tenant_id": "t3f2a9c1d", "key_id": "k8d1e",
                      "api_key": "caas_t3f2a9c1d_k8d1e_s3cr3t"},
    "create_api_key": {**WRITTEN, "key_id": "k2b7c", "api_key": "caas_t3f2a9c1d_k2b7c_s3cr3t"},
    "revoke_api_key": WRITTEN,
    "rotate_signing_key": {**WRITTEN, "kid": "sk2"},
    "set_allowed_origins": {**WRITTEN, "origins": ["https://app.example.com"]},
    "put_user": {**WRITTEN, "seq": 1, "user_id": "alice"},
    "create_token": {"token": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl", "expires_at": "2026-01-01T13:00:00Z"},
    "create_channel": {**WRITTEN, "seq": 3, "channel_id": "general"},
    "add_member": {**WRITTEN, "channel_id": "general"},
    "post_message": {**WRITTEN, "channel_id": "general", "message_id": "m01hzyx"},
    "edit_message": {**WRITTEN, "channel_id": "general", "message_id": "m01hzyx"},
    "typing": {"channel_id": "general", "user_id": "alice", "sent": True, "expires_in_ms": 5000},
    "channel_presence": {"channel_id": "general", "members": 2, "online": 1,
                         "statuses": {"alice": "online", "bob": "offline"}},
    "get_presence": {"alice": {"status": "online", "last_seen_at": "2026-01-01T12:00:00Z", "devices": 1}},
    "get_analytics": {
        "tenant_id": "t3f2a9c1d", "from": "2026-01-01T00:00:00.000Z", "to": "2026-01-02T00:00:00.000Z",
        "granularity": "day",
        "buckets": [{"start": "2026-01-01T00:00:00.000Z", "active_users": 4, "messages": 5, "replies": 1,
                     "active_channels": 2, "conversations": 2, "answered": 1, "median_first_reply_seconds": 42.5}],
        "totals": {"active_users": 4, "messages": 5, "replies": 1, "active_channels": 2, "conversations": 2,
                   "answered": 1, "median_first_reply_seconds": 42.5},
        "channels": [{"channel_id": "news", "messages": 3, "replies": 0},
                     {"channel_id": "help", "messages": 2, "replies": 1}],
    },
    "put_device": {**WRITTEN, "user_id": "bob", "device_id": "phone"},
    "claim_bundle": BUNDLE,
    "claim_bundles": {"bundles": [BUNDLE]},
}  # fmt: skip

ERROR: dict[str, Any] = {
    "error": {
        "code": "forbidden",
        "message": "you are not a member of channel 'general'",
        "details": {"rule": "not_a_member", "user_id": "alice"},
    }
}
RATE_LIMITED: dict[str, Any] = {
    "error": {
        "code": "rate_limited",
        "message": "too many requests (user writes); retry after 1 s",
        "details": {"scope": "user writes", "retry_after": 0.2},
    }
}
UNAVAILABLE: dict[str, Any] = {
    "error": {"code": "unavailable", "message": "the stream is busy; retry the request", "details": {}}
}
