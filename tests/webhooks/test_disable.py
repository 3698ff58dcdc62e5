"""An endpoint that keeps failing is disabled with an event, and a PATCH re-enables it: on
both backends (the Kafka worker's processor disables through the deciders)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cluster import serving
from tests.support import Tenant, new_tenant
from tests.webhooks.receiver import Receiver, wait_until
from tests.webhooks.test_delivery import channel, post, register


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
def test_failing_for_too_long_disables_and_patch_enables_again(backend: str, tmp_path: Path) -> None:
    receiver = Receiver(fail_first=10**9).start()
    try:
        with (
            serving(backend, tmp_path, {"CAAS_WEBHOOK_DISABLE_AFTER_SECONDS": "1"}) as srv,
            httpx.Client(timeout=30) as client,
        ):
            tenant = new_tenant(client, srv.url)
            hook = register(client, tenant, receiver.url, event_types=["MessagePosted"])
            url = f"{srv.url}/v1/webhooks/{hook['webhook_id']}"
            channel(client, tenant, "d", ["u1"])
            sent = post(client, tenant, "d", "are you there")

            def shown() -> dict[str, object]:
                found: dict[str, object] = client.get(url, headers=tenant.headers()).json()
                return found

            wait_until(lambda: shown()["enabled"] is False, what="the endpoint disabled")
            assert "failed" in str(shown()["disabled_reason"])
            r = client.get(f"{tenant.url}/v1/events", params={"types": "WebhookDisabled"}, headers=tenant.headers())
            assert [e["type"] for e in r.json()["events"]] == ["WebhookDisabled"]
            receiver.fail_first = 0
            r = client.patch(url, json={"enabled": True}, headers=tenant.headers())
            assert r.status_code == 200, r.text
            wait_until(
                lambda: any(d["ok"] and d["event_id"] == sent["event_id"] for d in deliveries(client, url, tenant)),
                what="the delivery once re-enabled",
            )
            assert shown()["enabled"] is True
    finally:
        receiver.stop()


def deliveries(client: httpx.Client, url: str, tenant: Tenant) -> list[dict[str, object]]:
    r = client.get(f"{url}/deliveries", params={"limit": 200}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    found: list[dict[str, object]] = r.json()["deliveries"]
    return found
