"""Stripe's two sides (the ``stripe`` SDK): :class:`StripeReporter`, the
:class:`~commands.billing.UsageReporter` (customers, Billing Meter Events; needs the API key), and
:class:`StripeWebhooks`, the :class:`~commands.billing.WebhookVerifier` (needs the endpoint's
signing secret). ``api/bootstrap.py`` builds each only when it is configured.

The SDK is synchronous; each call runs in a worker thread. ``api_base`` points it elsewhere
than Stripe (stripe-mock in tests). With ``request_log`` every request is appended to a JSON
lines file once Stripe has answered it, so an operator (or a test) can see what was sent; the
API key is never written there nor logged.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import stripe

from commands.billing import BadPayload, BadSignature, UsageReporter, WebhookVerifier
from domain.base import format_time


class StripeReporter(UsageReporter):
    def __init__(self, api_key: str, *, api_base: str | None = None, request_log: Path | None = None) -> None:
        self.request_log = request_log
        self._log_lock = threading.Lock()
        addresses: Any = {"api": api_base} if api_base else None
        # the SDK retries network failures with one idempotency key of its own per call
        self.client = stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=2)

    def _logged(self, entry: dict[str, Any]) -> None:
        if self.request_log is None:
            return
        line = orjson.dumps({"at": format_time(datetime.now(UTC)), **entry}) + b"\n"
        with self._log_lock, open(self.request_log, "ab") as out:
            out.write(line)

    async def create_customer(self, tenant_id: str, name: str, idempotency_key: str) -> str:
        def create() -> str:
            customer = self.client.v1.customers.create(
                params={"name": name, "metadata": {"caas_tenant_id": tenant_id}},
                options={"idempotency_key": idempotency_key},
            )
            self._logged({"request": "customer", "tenant_id": tenant_id, "customer": customer.id})
            return str(customer.id)

        return await asyncio.to_thread(create)

    async def send_meter_event(
        self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: datetime
    ) -> None:
        def send() -> None:
            # No idempotency key of ours: the identifier deduplicates at Stripe, and a key reused
            # with other parameters would be refused for 24 hours.
            self.client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                    "identifier": identifier,
                    "timestamp": int(timestamp.timestamp()),
                },
            )
            self._logged(
                {
                    "request": "meter_event",
                    "event_name": event_name,
                    "customer": customer_id,
                    "value": value,
                    "identifier": identifier,
                    "hour": format_time(timestamp),
                }
            )

        await asyncio.to_thread(send)


class StripeWebhooks(WebhookVerifier):
    def __init__(self, secret: str, *, tolerance: int = 300) -> None:
        self.secret = secret
        self.tolerance = tolerance

    def verify(self, payload: bytes, signature: str) -> dict[str, Any]:
        try:
            stripe.WebhookSignature.verify_header(payload, signature, self.secret, self.tolerance)
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(str(exc.user_message or "the Stripe-Signature does not verify")) from None
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise BadPayload("the signed payload is not JSON") from None
        if not isinstance(event, dict):
            raise BadPayload("the signed payload is not a JSON object (a Stripe event)")
        return event
