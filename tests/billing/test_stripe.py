"""Stripe: ``caas billing sync`` against stripe-mock (through a recording proxy), and the
signed webhook. stripe-mock keeps no state: the tests check what reached it and what CAAS
recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
from collections import Counter
from typing import Any

import httpx

from tests.billing.conftest import WEBHOOK_SECRET, Billed, Recorder
from tests.billing.test_plans_and_quotas import events, post, room
from tests.support import Tenant


def usage_in(client: httpx.Client, tenants: list[Tenant]) -> None:
    """Messages, replies and edits for each tenant, waited for in the usage read model."""
    for tenant in tenants:
        first = post(client, tenant).json()
        post(client, tenant)
        r = client.post(
            f"{tenant.url}/v1/channels/general/messages",
            json={"text": "re", "parent_id": first["message_id"], "user_id": "alice"},
            headers=tenant.headers(),
        )
        assert r.status_code == 201, r.text
        r = client.patch(
            f"{tenant.url}/v1/channels/general/messages/{first['message_id']}",
            json={"text": "hi!"},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    for tenant in tenants:
        while time.monotonic() < deadline:
            lines = client.get(f"{tenant.url}/v1/billing/preview", headers=tenant.headers()).json()["lines"]
            if {x["meter"]: x["used"] for x in lines}.get("edits") == 1:
                break
            time.sleep(0.2)


def synced_hours(client: httpx.Client, tenant: Tenant) -> set[str]:
    return {e["payload"]["hour"] for e in events(client, tenant, "UsageHourSynced") if e["payload"]["meter_events"]}


def test_sync_sends_each_meter_hour_once_and_a_second_run_sends_nothing(billed: Billed, recorder: Recorder) -> None:
    with httpx.Client(timeout=10) as client:
        tenants = [room(billed, client, f"sync{n}") for n in range(2)]
        usage_in(client, tenants)
        log = billed.root / "requests-twice.jsonl"
        with billed.offline():
            first = billed.sync_done(recorder.url, log)
            sent = recorder.meter_events()
            assert first["customers_created"] >= 2 and first["meter_events"] == len(sent) > 0
            again = billed.sync_done(recorder.url, log)
        assert again["meter_events"] == 0 and again["customers_created"] == 0
        assert recorder.meter_events() == sent  # nothing more reached Stripe
        ids = Counter(e["identifier"] for e in sent)
        assert all(n == 1 for n in ids.values())
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        assert Counter(x["identifier"] for x in logged if x["request"] == "meter_event") == ids
        for tenant in tenants:
            state = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()
            assert state["customer_id"] is not None
            mine = [e for e in sent if e["payload[stripe_customer_id]"] == state["customer_id"]]
            assert {e["event_name"] for e in mine} >= {"caas_messages", "caas_replies", "caas_edits"}
            assert synced_hours(client, tenant)
            assert len(events(client, tenant, "StripeCustomerCreated")) == 1


def test_a_sync_killed_midway_resends_nothing_it_recorded(billed: Billed, recorder: Recorder) -> None:
    with httpx.Client(timeout=10) as client:
        tenants = [room(billed, client, f"kill{n}") for n in range(6)]
        usage_in(client, tenants)
        recorder.delay = 0.15  # slow "Stripe" down, so that the kill lands mid-run
        log = billed.root / "requests-kill.jsonl"
        with billed.offline():
            process = billed.sync(recorder.url, log)
            deadline = time.monotonic() + 120
            while len(recorder.meter_events()) < 6 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            assert process.wait(10) == -signal.SIGKILL, "the sync finished before it could be killed"
            before = list(recorder.meter_events())
            assert before, "the sync sent nothing before it was killed"
        recorded = {t.tenant_id: synced_hours(client, t) for t in tenants}  # what the log holds at the kill
        customers = {
            t.tenant_id: client.get(f"{billed.url}/v1/billing/invoices", headers=t.headers()).json()["customer_id"]
            for t in tenants
        }
        recorder.delay = 0.0
        with billed.offline():
            billed.sync_done(recorder.url, log)
            billed.sync_done(recorder.url, log)
        after = recorder.meter_events()[len(before) :]
        customer_tenant = {c: t for t, c in customers.items() if c}
        for event in after:  # resent only what was not recorded as synced at the kill
            tenant_id = customer_tenant.get(event["payload[stripe_customer_id]"])
            hour = time.strftime("%Y-%m-%dT%H:00:00.000Z", time.gmtime(int(event["timestamp"])))
            assert tenant_id is None or hour not in recorded[tenant_id], event
        ids = Counter(e["identifier"] for e in recorder.meter_events())
        twice = [i for i, n in ids.items() if n > 1]
        assert len(twice) <= 3, twice  # at most the meters of the one hour in flight at the kill
        for tenant in tenants:
            assert synced_hours(client, tenant)
            assert len(events(client, tenant, "StripeCustomerCreated")) == 1


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """The ``Stripe-Signature`` header as Stripe computes it: HMAC-SHA256 of ``t.payload``."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def stripe_event(event_id: str, kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "data": {"object": obj}}).encode()


def webhook(billed: Billed, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return httpx.post(f"{billed.url}/v1/billing/stripe/webhook", content=payload, headers=headers, timeout=10)


def test_webhooks_are_verified_recorded_once_and_a_past_due_tenant_only_reads(
    billed: Billed, recorder: Recorder
) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = room(billed, client, "payer")
        with billed.offline():
            billed.sync_done(recorder.url, billed.root / "requests-webhook.jsonl")
        customer = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()["customer_id"]
        assert customer
        invoice = {"id": f"in_{tenant.tenant_id}", "object": "invoice", "customer": customer, "status": "open",
                   "amount_due": 1250, "amount_paid": 0, "currency": "usd"}  # fmt: skip
        failed = stripe_event(f"evt_f_{tenant.tenant_id}", "invoice.payment_failed", invoice)
        for bad in [
            None,
            "t=1,v1=deadbeef",
            sign(failed, secret="whsec_other"),
            sign(failed, at=int(time.time()) - 3600),  # stale: older than the tolerance
            sign(failed + b" "),
        ]:
            r = webhook(billed, failed, bad)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_signature"
        assert events(client, tenant, "StripeEventRecorded") == []  # nothing recorded
        r = webhook(billed, failed, sign(failed))
        assert r.status_code == 200 and r.json() == {"received": True, "recorded": True}, r.text
        assert webhook(billed, failed, sign(failed)).json() == {"received": True, "recorded": False}  # a redelivery
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and post(client, tenant).status_code != 402:
            time.sleep(0.2)
        refused = post(client, tenant)
        assert refused.status_code == 402 and refused.json()["error"]["code"] == "payment_required"
        assert client.get(f"{billed.url}/v1/channels/general/messages", headers=tenant.headers()).status_code == 200
        listed = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()
        assert listed["payment_status"] == "past_due"
        assert [(i["id"], i["amount_due"]) for i in listed["invoices"]] == [(invoice["id"], 1250)]
        paid = stripe_event(
            f"evt_p_{tenant.tenant_id}", "invoice.paid", {**invoice, "status": "paid", "amount_paid": 1250}
        )
        assert webhook(billed, paid, sign(paid)).json()["recorded"] is True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and post(client, tenant).status_code != 201:
            time.sleep(0.2)
        assert post(client, tenant).status_code == 201
        listed = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()
        assert listed["payment_status"] == "ok" and listed["invoices"][0]["status"] == "paid"
        other = stripe_event("evt_unknown_customer", "invoice.paid", {**invoice, "customer": "cus_nobody"})
        assert webhook(billed, other, sign(other)).json() == {"received": True, "recorded": False}
        ignored = stripe_event("evt_ignored", "charge.refunded", {"customer": customer})
        assert webhook(billed, ignored, sign(ignored)).json() == {"received": True, "recorded": False}
        assert len(events(client, tenant, "StripeEventRecorded")) == 2
