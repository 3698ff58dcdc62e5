""":class:`Outbox`: sends pending messages over HTTP until the server acknowledges each once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from caas_client import calls
from caas_client.backoff import Backoff
from caas_client.client import AsyncClient
from caas_client.errors import CaasError, ConnectionLost
from caas_client.outbox import Ack, OutboxState, OutboxStore, Pending, new_client_msg_id


class Outbox:
    """Messages are stored, then posted one at a time in order, each attempt with the same
    ``client_msg_id``. A lost answer (broken connection, timeout), a 429 or a 5xx is retried after
    a backoff with jitter (or the server's ``Retry-After``), and so is a 401 (a new token on the
    client lets it through: give the client a ``refresh_token``); any other error answer rejects
    the message for good (``on_rejected``). A :class:`caas_client.Realtime` given this outbox also
    acknowledges a message when its event arrives on the socket.

    ``async with Outbox(client) as outbox: await outbox.send("room", "hi")`` runs the sender in
    the background; or call :meth:`flush` yourself."""

    def __init__(
        self,
        client: AsyncClient,
        store: OutboxStore | None = None,
        *,
        backoff: Backoff | None = None,
        on_acked: Callable[[Ack], None] | None = None,
        on_rejected: Callable[[Pending, CaasError], None] | None = None,
    ) -> None:
        self.client = client
        self.state = OutboxState(store) if store is not None else OutboxState()
        self.backoff = backoff or Backoff(base=0.1, cap=10.0)
        self.on_acked = on_acked
        self.on_rejected = on_rejected
        self.attempts = 0  # POSTs made, retries included
        self._wake = asyncio.Event()
        self._settled: dict[str, asyncio.Future[Ack]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Outbox:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def pending(self) -> list[Pending]:
        return list(self.state.pending.values())

    def send(
        self,
        channel_id: str,
        text: str,
        *,
        parent_id: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        client_msg_id: str | None = None,
    ) -> Pending:
        """Queue a message (stored at once) and return it; :meth:`acknowledged` waits for it."""
        item = Pending(client_msg_id or new_client_msg_id(), channel_id, text, parent_id, tuple(attachments or ()))
        self.state.enqueue(item)
        self._wake.set()
        return item

    async def acknowledged(self, client_msg_id: str) -> Ack:
        """Wait until the server has acknowledged the message (raises its :class:`CaasError` if
        it was rejected)."""
        if (ack := self.state.acked.get(client_msg_id)) is not None:
            return ack
        return await self._future(client_msg_id)

    def observe(self, event: dict[str, Any]) -> None:
        """An event seen on the socket (called by :class:`caas_client.Realtime`)."""
        ack = self.state.observe(event)
        if ack is not None:
            self.client.observe_position(ack.position)  # reads wait for it, as after the HTTP answer
            self._settle(ack)

    async def flush(self) -> None:
        """Deliver every pending message, retrying until each is acknowledged or rejected."""
        while (item := self.state.next()) is not None:
            await self._deliver(item)

    async def run(self) -> None:
        while True:
            await self.flush()
            self._wake.clear()
            if self.state.next() is None:
                await self._wake.wait()

    async def _deliver(self, item: Pending) -> None:
        self.attempts += 1
        try:
            written = await self.client.call(calls.post_message(item.channel_id, item.body()))
        except ConnectionLost:
            await asyncio.sleep(self.backoff.failed())
            return
        except CaasError as exc:
            # 401: the token is not accepted (the client's refresh_token, if any, failed too);
            # the message waits for a token the app sets on the client, it is never dropped
            if exc.retryable or exc.status == 401:
                await asyncio.sleep(max(exc.retry_after or 0.0, self.backoff.failed()))
                return
            if self.state.reject(item.client_msg_id, exc.code):
                if self.on_rejected is not None:
                    self.on_rejected(item, exc)
                self._future(item.client_msg_id).set_exception(exc)
            return
        self.backoff.reset()
        ack = Ack(item.client_msg_id, written.channel_id, written.message_id, written.seq, written.position)
        if self.state.acknowledge(ack):
            self._settle(ack)

    def _settle(self, ack: Ack) -> None:
        if self.on_acked is not None:
            self.on_acked(ack)
        future = self._future(ack.client_msg_id)
        if not future.done():
            future.set_result(ack)

    def _future(self, client_msg_id: str) -> asyncio.Future[Ack]:
        future = self._settled.get(client_msg_id)
        if future is None:
            future = self._settled[client_msg_id] = asyncio.get_running_loop().create_future()
        return future
