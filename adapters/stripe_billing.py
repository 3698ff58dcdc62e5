"""The Stripe adapter of the :class:`~commands.billing.PaymentProvider` port (the ``stripe`` SDK).

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

from commands.billing import BadSignature, PaymentProvider
from domain.base import format_time


class StripeProvider(PaymentProvider):
    def __init__(
        self,
        api_key: str | None,
        *,
        api_base: str | None = None,
        webhook_secret: str | None = None,
        tolerance: int = 300,
        request_log: Path | None = None,
    ) -> None:
        self.webhook_secret = webhook_secret
        self.tolerance = tolerance
        self.request_log = request_log
        self._log_lock = threading.Lock()
        self.client: stripe.StripeClient | None = None
        if api_key:
            addresses: Any = {"api": api_base} if api_base else None
            self.client = stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=2)

    def _require(self) -> stripe.StripeClient:
        if self.client is None:
            raise RuntimeError("Stripe is not configured: set CAAS_STRIPE_API_KEY (see docs/stripe.md)")
        return self.client

    def _logged(self, entry: dict[str, Any]) -> None:
        if self.request_log is None:
            return
        line = orjson.dumps({"at": format_time(datetime.now(UTC)), **entry}) + b"\n"
        with self._log_lock, open(self.request_log, "ab") as out:
            out.write(line)

    async def create_customer(self, tenant_id: str, name: str, idempotency_key: str) -> str:
        client = self._require()

        def create() -> str:
            customer = client.v1.customers.create(
                params={"name": name, "metadata": {"caas_tenant_id": tenant_id}},
                options={"idempotency_key": idempotency_key},
            )
            self._logged({"request": "customer", "tenant_id": tenant_id, "customer": customer.id})
            return str(customer.id)

        return await asyncio.to_thread(create)

    async def send_meter_event(
        self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: datetime
    ) -> None:
        client = self._require()

        def send() -> None:
            client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                    "identifier": identifier,
                    "timestamp": int(timestamp.timestamp()),
                },
                options={"idempotency_key": identifier},
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

    def verify_webhook(self, payload: bytes, signature: str) -> dict[str, Any]:
        if not self.webhook_secret:
            raise BadSignature("webhooks are not configured here: set CAAS_STRIPE_WEBHOOK_SECRET")
        try:
            stripe.WebhookSignature.verify_header(payload, signature, self.webhook_secret, self.tolerance)
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(str(exc.user_message or "the Stripe-Signature does not verify")) from None
        try:
            event: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise BadSignature("the signed payload is not JSON") from None
        return event
