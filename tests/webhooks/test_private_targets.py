"""A server that does not allow private targets (the default) refuses them at registration
with 422, whatever the spelling of the address; IP literals only, so nothing is looked up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import serving
from tests.support import Server, new_tenant


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = Path(tmp_path_factory.mktemp("strict"))
    strict_env = {"CAAS_WEBHOOK_ALLOW_PRIVATE": "false", "CAAS_WEBHOOK_ALLOWED_PORTS": "80,443,8080,8443"}
    with serving("embedded", root, strict_env) as srv:
        yield srv


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook", "http://10.0.0.7/hook", "http://192.168.1.1/", "http://172.20.0.1/",
        "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/", "http://0.0.0.0/", "http://[::1]/",
        "http://[::ffff:127.0.0.1]/", "http://[fd00::1]/", "http://[fe80::1]/", "http://[2002:7f00:1::]/",
        "http://[64:ff9b::a00:1]/", "http://localhost/", "https://hooks.localhost/",
    ],
)  # fmt: skip
def test_private_targets_are_refused(strict: Server, client: httpx.Client, url: str) -> None:
    tenant = new_tenant(client, strict.url)
    r = client.post(f"{strict.url}/v1/webhooks", json={"url": url}, headers=tenant.headers())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["rule"] == "invalid_webhook_url"
    r = client.get(f"{strict.url}/v1/webhooks", headers=tenant.headers())
    assert r.json()["webhooks"] == []


def test_a_public_target_is_accepted_and_a_patch_to_a_private_one_refused(strict: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, strict.url)
    r = client.post(
        f"{strict.url}/v1/webhooks",
        json={"url": "https://93.184.216.34/hook", "event_types": ["MessagePosted"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    hook = r.json()["webhook_id"]
    r = client.patch(f"{strict.url}/v1/webhooks/{hook}", json={"url": "http://10.1.1.1/"}, headers=tenant.headers())
    assert r.status_code == 422
    r = client.delete(f"{strict.url}/v1/webhooks/{hook}", headers=tenant.headers())  # nothing is sent there
    assert r.status_code == 200


def test_a_port_off_the_allowed_list_is_refused(strict: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, strict.url)
    for url, status in (("https://93.184.216.34:22/hook", 422), ("https://93.184.216.34:8443/hook", 201)):
        r = client.post(f"{strict.url}/v1/webhooks", json={"url": url}, headers=tenant.headers())
        assert r.status_code == status, r.text
        if status == 422:
            assert r.json()["error"]["details"]["rule"] == "invalid_webhook_url" and "port" in r.text
        else:
            client.delete(f"{strict.url}/v1/webhooks/{r.json()['webhook_id']}", headers=tenant.headers())
