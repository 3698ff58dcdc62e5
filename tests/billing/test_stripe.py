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
from datetime import datetime
from typing import Any

import httpx

from tests.billing.conftest import WEBHOOK_SECRET, Billed, Recorder
from tests.billing.test_plans_and_quotas import events, post
from tests.billing.test_plans_and_quotas import room as new_room
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


CREATED: dict[str, list[Tenant]] = {}  # backend -> every tenant this module created: one sync covers them all


def room(billed: Billed, client: httpx.Client, name: str) -> Tenant:
    tenant = new_room(billed, client, name)
    CREATED.setdefault(billed.backend, []).append(tenant)
    return tenant


def synced_hours(client: httpx.Client, tenant: Tenant) -> set[str]:
    return {e["payload"]["hour"] for e in events(client, tenant, "UsageHourSynced") if e["payload"]["meter_events"]}


EXACT = ("messages", "replies", "edits")  # meters the tests' own reads and writes do not move
GAUGES = ("mau", "stored_bytes")  # gauges the tests move (no sockets here: no peak)


def used(client: httpx.Client, tenant: Tenant) -> dict[str, int]:
    lines = client.get(f"{tenant.url}/v1/billing/preview", headers=tenant.headers()).json()["lines"]
    out: dict[str, int] = {}
    for line in lines:
        out[line["meter"]] = out.get(line["meter"], 0) + line["used"]
    return out


def customer_of(client: httpx.Client, billed: Billed, tenant: Tenant) -> str:
    found: str = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()["customer_id"]
    assert found
    return found


def assert_billed_exactly(client: httpx.Client, billed: Billed, recorder: Recorder, tenants: list[Tenant]) -> None:
    """What Stripe counts for each tenant's message meters is the tenant's usage, no more, no less."""
    totals = recorder.totals()
    for tenant in tenants:
        customer, usage = customer_of(client, billed, tenant), used(client, tenant)
        for meter in EXACT:
            assert totals.get((customer, f"caas_{meter}"), 0) == usage.get(meter, 0), (tenant.tenant_id, meter)
        # a gauge is billed by its last event (Stripe's ``last`` formula): the period's value
        lasts = recorder.last()
        for meter in GAUGES:
            assert lasts.get((customer, f"caas_{meter}"), 0) == usage.get(meter, 0), (tenant.tenant_id, meter)
    assert recorder.refused == []  # no stale timestamp, no idempotency key reused with other parameters


def test_sync_sends_each_meter_hour_once_and_a_second_run_sends_nothing_new(billed: Billed, recorder: Recorder) -> None:
    with httpx.Client(timeout=10) as client:
        tenants = [room(billed, client, f"sync{n}") for n in range(2)]
        usage_in(client, tenants)
        log = billed.root / "requests-twice.jsonl"
        with billed.offline():
            first = billed.sync_done(recorder.url, log)
            sent = recorder.meter_events()
            assert first["customers_created"] >= 2 and first["meter_events"] == len(sent) > 0
            again = billed.sync_done(recorder.url, log)
        assert again["customers_created"] == 0
        later = recorder.meter_events()[len(sent) :]
        # only the API meters may have grown between the runs (the nodes flush every few seconds)
        assert {e["event_name"] for e in later} <= {"caas_api_reads", "caas_api_writes"}, later
        ids = Counter(e["identifier"] for e in recorder.meter_events())
        assert all(n == 1 for n in ids.values())
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        assert Counter(x["identifier"] for x in logged if x["request"] == "meter_event") == ids
        assert_billed_exactly(client, billed, recorder, tenants)
        for tenant in tenants:
            mine = [e for e in sent if e["payload[stripe_customer_id]"] == customer_of(client, billed, tenant)]
            assert {e["event_name"] for e in mine} >= {"caas_messages", "caas_replies", "caas_edits"}
            # one user wrote (MAU 1), and the bytes of "hi!", "hi" and "re" are stored
            assert used(client, tenant)["mau"] == 1 and used(client, tenant)["stored_bytes"] == 7
            assert {e["event_name"] for e in mine} >= {"caas_mau", "caas_stored_bytes"}
            assert synced_hours(client, tenant)
            assert len(events(client, tenant, "StripeCustomerCreated")) == 1


def test_usage_that_arrives_after_its_hour_was_synced_is_invoiced_under_new_identifiers(
    billed: Billed, recorder: Recorder
) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = room(billed, client, "late")
        usage_in(client, [tenant])
        log = billed.root / "requests-late.jsonl"
        with billed.offline():
            billed.sync_done(recorder.url, log)
        before = {e["identifier"] for e in recorder.meter_events()}
        assert_billed_exactly(client, billed, recorder, [tenant])
        for _ in range(3):  # more usage in the hour already sent
            assert post(client, tenant).status_code == 201
        deadline = time.monotonic() + 60
        while used(client, tenant).get("messages") != 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert used(client, tenant)["messages"] == 5
        with billed.offline():
            billed.sync_done(recorder.url, log)
        customer = customer_of(client, billed, tenant)
        new = [e for e in recorder.meter_events() if e["identifier"] not in before]
        increase = [
            e for e in new if e["payload[stripe_customer_id]"] == customer and e["event_name"] == "caas_messages"
        ]
        assert sum(int(e["payload[value]"]) for e in increase) == 3
        stored = [
            e for e in new if e["payload[stripe_customer_id]"] == customer and e["event_name"] == "caas_stored_bytes"
        ]
        assert [int(e["payload[value]"]) for e in stored] == [13]  # the period-to-date level, not a difference
        assert_billed_exactly(client, billed, recorder, [tenant])
        prepared = events(client, tenant, "MeterEventsPrepared")
        numbers = [i["n"] for e in prepared for i in e["payload"]["items"] if i["meter"] == "messages"]
        assert sorted(numbers)[-1] >= 1  # the increase is the meter hour's next event


def test_a_sync_killed_midway_resends_only_what_it_had_recorded_and_counts_nothing_twice(
    billed: Billed, recorder: Recorder
) -> None:
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
        prepared = {  # of every tenant of the deployment: the sync serves them all
            t.tenant_id: {
                i["identifier"] for e in events(client, t, "MeterEventsPrepared") for i in e["payload"]["items"]
            }
            for t in CREATED[billed.backend]
        }
        recorder.delay = 0.0
        with billed.offline():
            billed.sync_done(recorder.url, log)
            billed.sync_done(recorder.url, log)
        every_prepared = set().union(*prepared.values())
        for event in before:  # nothing reached Stripe that had not been recorded as about to be sent
            assert event["identifier"] in every_prepared, event
        twice = [i for i, n in Counter(e["identifier"] for e in recorder.meter_events()).items() if n > 1]
        assert set(twice) <= every_prepared  # a resend repeats a recorded event exactly; Stripe drops it
        assert_billed_exactly(client, billed, recorder, tenants)
        for tenant in tenants:
            assert synced_hours(client, tenant)
            assert len(events(client, tenant, "StripeCustomerCreated")) == 1


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """The ``Stripe-Signature`` header as Stripe computes it: HMAC-SHA256 of ``t.payload``."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def stripe_event(event_id: str, kind: str, obj: dict[str, Any], created: int | None = None) -> bytes:
    created = int(time.time()) if created is None else created
    return json.dumps(
        {"id": event_id, "object": "event", "type": kind, "created": created, "data": {"object": obj}}
    ).encode()


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
        assert delivered(billed, failed) == {"received": True, "recorded": True}
        assert webhook(billed, failed, sign(failed)).json() == {"received": True, "recorded": False}  # a redelivery
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and post(client, tenant).status_code != 402:
            time.sleep(0.2)
        refused = post(client, tenant)
        assert refused.status_code == 402 and refused.json()["error"]["code"] == "payment_required"
        assert client.get(f"{billed.url}/v1/channels/general/messages", headers=tenant.headers()).status_code == 200
        # a past-due tenant still manages its credentials: a leaked key can be replaced and revoked
        spare = client.post(f"{billed.url}/v1/api-keys", json={}, headers=tenant.headers())
        assert spare.status_code == 201, spare.text
        revoked = client.delete(f"{billed.url}/v1/api-keys/{spare.json()['key_id']}", headers=tenant.headers())
        assert revoked.status_code == 200, revoked.text
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
        unknown = webhook(billed, other, sign(other))  # not (yet) known here: Stripe retries it
        assert unknown.status_code == 503 and unknown.json()["error"]["details"]["rule"] == "unknown_customer"
        ignored = stripe_event("evt_ignored", "charge.refunded", {"customer": customer})
        assert webhook(billed, ignored, sign(ignored)).json() == {"received": True, "recorded": False}
        for body in [b"[1, 2]", b"42", b'"evt"', b"null"]:  # signed, JSON, but not an event
            r = webhook(billed, body, sign(body))
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
        recorded = events(client, tenant, "StripeEventRecorded")
        assert len(recorded) == 2
        for event in recorded:  # every recorded event is this tenant's customer's
            assert event["payload"]["invoice"]["id"] == invoice["id"]


def delivered(billed: Billed, payload: bytes) -> dict[str, Any]:
    """Deliver a signed event as Stripe does: again while CAAS answers 503 (a customer its read
    model does not know yet), up to a bound."""
    deadline = time.monotonic() + 30
    while True:
        r = webhook(billed, payload, sign(payload))
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def standing(client: httpx.Client, billed: Billed, tenant: Tenant) -> str:
    found: str = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()["payment_status"]
    return found


def test_webhooks_arriving_out_of_order_and_a_deleted_subscription(billed: Billed, recorder: Recorder) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = room(billed, client, "order")
        with billed.offline():
            billed.sync_done(recorder.url, billed.root / "requests-order.jsonl")
        customer = customer_of(client, billed, tenant)
        invoice = {"id": f"in_o_{tenant.tenant_id}", "customer": customer, "status": "open", "amount_due": 900}
        now = int(time.time())
        paid = stripe_event(f"evt_op_{tenant.tenant_id}", "invoice.paid", {**invoice, "status": "paid"}, now)
        failed = stripe_event(f"evt_of_{tenant.tenant_id}", "invoice.payment_failed", invoice, now - 60)
        assert delivered(billed, paid)["recorded"] is True
        assert delivered(billed, failed)["recorded"] is True  # earlier at Stripe, later here
        assert standing(client, billed, tenant) == "ok"
        listed = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()["invoices"]
        assert [(i["id"], i["status"], i["outcome"]) for i in listed] == [(invoice["id"], "paid", "paid")]
        # an unpaid invoice, then the subscription is deleted: still past due
        unpaid = {**invoice, "id": f"in_u_{tenant.tenant_id}"}
        failing = stripe_event(f"evt_uf_{tenant.tenant_id}", "invoice.payment_failed", unpaid, now + 1)
        assert delivered(billed, failing)["recorded"] is True
        subscription = {"id": "sub_1", "customer": customer, "status": "canceled", "current_period_end": now}
        deleted = stripe_event(f"evt_sd_{tenant.tenant_id}", "customer.subscription.deleted", subscription, now + 2)
        assert delivered(billed, deleted)["recorded"] is True
        assert standing(client, billed, tenant) == "past_due"
        older = stripe_event(
            f"evt_su_{tenant.tenant_id}", "customer.subscription.updated", {**subscription, "status": "active"}, now
        )
        assert delivered(billed, older)["recorded"] is True
        state = client.get(f"{billed.url}/v1/billing/invoices", headers=tenant.headers()).json()
        assert state["subscription"]["status"] == "canceled"  # the older update does not undo the deletion
        assert state["payment_status"] == "past_due"
        paid_late = stripe_event(f"evt_up_{tenant.tenant_id}", "invoice.paid", {**unpaid, "status": "paid"}, now + 3)
        assert delivered(billed, paid_late)["recorded"] is True
        assert standing(client, billed, tenant) == "ok"


def test_hours_older_than_stripe_accepts_are_recorded_as_skipped_and_the_sync_goes_on(
    billed: Billed, recorder: Recorder
) -> None:
    """Runs last in this module: its sync, 40 days ahead, moves every tenant's window."""
    with httpx.Client(timeout=10) as client:
        tenant = room(billed, client, "stale")
        usage_in(client, [tenant])
        log = billed.root / "requests-stale.jsonl"
        recorder.ahead = 40 * 86_400  # "Stripe" is as far ahead as the sync
        with billed.offline():
            report = billed.sync_done(recorder.url, log, ahead=40 * 86_400)
        recorder.ahead = 0
        assert report["skipped_hours"] >= 1 and report["failed"] == 0
        assert recorder.refused == []  # nothing too old was sent to be refused
        customer = customer_of(client, billed, tenant)
        floor = max(e["payload"]["floor"] for e in events(client, tenant, "UsageWindowMoved"))
        floor_at = int(datetime.fromisoformat(floor).timestamp())
        # no usage of the skipped hours; only the gauges' values carried into the window (the bytes
        # still stored, the month's users), stamped at its hours
        mine = [e for e in recorder.meter_events() if e["payload[stripe_customer_id]"] == customer]
        assert {e["event_name"] for e in mine} <= {"caas_stored_bytes", "caas_mau"}, mine
        assert all(int(e["timestamp"]) >= floor_at for e in mine)
        before = len(mine)
        moved = events(client, tenant, "UsageWindowMoved")
        skipped = {m: v for e in moved for m, v in e["payload"]["skipped"].items()}
        assert {m: skipped.get(m) for m in EXACT} == {"messages": 2, "replies": 1, "edits": 1}
        with billed.offline():
            again = billed.sync_done(recorder.url, log)  # back to now: the skipped hours stay skipped
        assert again["failed"] == 0
        assert len([e for e in recorder.meter_events() if e["payload[stripe_customer_id]"] == customer]) == before
