"""A deployment where no processor delivers refuses registrations (503) instead of accepting
endpoints it would never send to (docs/webhooks.md)."""

from __future__ import annotations

from pathlib import Path

import httpx

from api.bootstrap import webhook_refusal
from api.settings import Settings
from tests.cluster import serving
from tests.support import new_tenant


def test_with_delivery_off_a_registration_is_refused(tmp_path: Path, client: httpx.Client) -> None:
    with serving("embedded", tmp_path, {"CAAS_WEBHOOKS": "off"}) as srv:
        tenant = new_tenant(client, srv.url)
        r = client.post(f"{tenant.url}/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=tenant.headers())
        assert r.status_code == 503, r.text
        assert r.json()["error"]["details"]["rule"] == "webhooks_unavailable"
        assert "CAAS_WEBHOOKS=off" in r.json()["error"]["message"]


def test_kafka_with_several_partitions_refuses_registrations() -> None:
    kafka = {"CAAS_BACKEND": "kafka", "CAAS_KAFKA_PARTITIONS": "4"}
    assert "CAAS_KAFKA_PARTITIONS=1" in (webhook_refusal(Settings.from_env(kafka)) or "")
    assert webhook_refusal(Settings.from_env({**kafka, "CAAS_KAFKA_PARTITIONS": "1"})) is None
