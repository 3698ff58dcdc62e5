"""Outboxes: send pending messages over HTTP until the server acknowledges each once.

:class:`Outbox` runs on an :class:`AsyncClient` (in the background, or by :meth:`Outbox.flush`);
:class:`SyncOutbox` on a blocking :class:`Client`. Both keep their messages in an
:class:`OutboxState` and decide the same way what an answer means (:class:`_Sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from caas_client import calls
from caas_client.backoff import Backoff
from caas_client.client import AsyncClient, Client, _Base
from caas_client.errors import CaasError, ConnectionLost
from caas_client.models import MessageWritten
from caas_client.outbox import Ack, OutboxState, OutboxStore, Pending, new_client_msg_id

log = logging.getLogger("caas_client")


class _Sender:
    """What both outboxes share: the state, queuing, and what an answer or a failure means."""

    def __init__(
        self,
        client: _Base,
        store: OutboxStore | None,
        backoff: Backoff | None,
        on_acked: Callable[[Ack], None] | None,
        on_rejected: Callable[[Pending, CaasError], None] | None,
        on_retry: Callable[[Pending, Exception, int], None] | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.on_retry = on_retry  # (message, error, failed attempts so far): before each retry
        self.max_attempts = max_attempts  # a message failing this many times is rejected (None: never)
        self._tries: dict[str, int] = {}  # failed attempts of each pending message
        self.state = OutboxState(store) if store is not None else OutboxState()
        # the latest rejected messages and why (as many as the state remembers), to inspect
        self.refused: OrderedDict[str, tuple[Pending, CaasError]] = OrderedDict()
        self.backoff = backoff or Backoff(base=0.1, cap=10.0)
        self.on_acked = on_acked
        self.on_rejected = on_rejected
        self.attempts = 0  # POSTs made, retries included
        self.errors: list[Exception] = []  # the latest unexpected errors (at most 20), each logged
        self._client = client

    def _unexpected(self, error: Exception) -> None:
        """An error the sender did not expect (an answer it cannot read, a store or a callback that
        raised): logged and kept in :attr:`errors`; the sender goes on."""
        log.error("caas_client outbox: %r", error, exc_info=error)
        self.errors = [*self.errors[-19:], error]

    def _notify(self, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is not None:
            try:
                callback(*args)
            except Exception as exc:  # the app's bug must not stop the delivery of other messages
                self._unexpected(exc)

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
        user_id: str | None = None,
    ) -> Pending:
        """Queue a message (stored at once) and return it; ``user_id`` names the author when the
        client holds a tenant's API key."""
        item = Pending(
            client_msg_id or new_client_msg_id(), channel_id, text, parent_id, tuple(attachments or ()), user_id
        )
        self.state.enqueue(item)
        self._queued()
        return item

    def _queued(self) -> None:
        pass

    def _call(self, item: Pending) -> calls.Call[MessageWritten]:
        self.attempts += 1
        return calls.post_message(item.channel_id, item.body())

    def _written(self, item: Pending, written: MessageWritten) -> Ack | None:
        """The server's answer; the :class:`Ack` if it is news."""
        self.backoff.reset()
        self._tries.pop(item.client_msg_id, None)
        ack = Ack(item.client_msg_id, written.channel_id, written.message_id, written.seq, written.position)
        if not self.state.acknowledge(ack):
            return None
        self._notify(self.on_acked, ack)
        return ack

    def _failed(self, item: Pending, error: ConnectionLost | CaasError) -> float | None:
        """How long to wait before trying again, or ``None``: the message is rejected for good.

        A lost answer, 429 and 5xx are retried, and so is 401 (the message waits for a token that
        works: the client's ``refresh_token``, or one the app sets), each time after ``on_retry``,
        until ``max_attempts``. A message that failed goes behind the other channels' messages, so
        that one that keeps failing does not hold up the rest (its channel's order is kept)."""
        cmid = item.client_msg_id
        tries = self._tries[cmid] = self._tries.get(cmid, 0) + 1
        retryable = isinstance(error, ConnectionLost) or error.retryable or error.status == 401
        if retryable and (self.max_attempts is None or tries < self.max_attempts):
            self._notify(self.on_retry, item, error, tries)
            self.state.defer(cmid)
            delay = self.backoff.failed()
            return max(error.retry_after or 0.0, delay) if isinstance(error, CaasError) else delay
        refusal = error if isinstance(error, CaasError) else CaasError(0, "connection_lost", str(error))
        self._tries.pop(cmid, None)
        if self.state.reject(cmid, refusal.code):
            self.refused[cmid] = (item, refusal)
            while len(self.refused) > self.state.remember:
                self.refused.popitem(last=False)
            if self.on_rejected is None:  # never dropped without a word
                log.warning("caas_client outbox: message %s to %s rejected: %s", cmid, item.channel_id, refusal)
            self._notify(self.on_rejected, item, refusal)
        return None

    def observe(self, event: dict[str, Any]) -> Ack | None:
        """An event seen on the socket (called by :class:`caas_client.Realtime`): a message of
        ours is acknowledged by its own event, whichever comes first."""
        ack = self.state.observe(event)
        if ack is not None:
            self._client.observe_position(ack.position)  # reads wait for it, as after the HTTP answer
            self._notify(self.on_acked, ack)
        return ack


class Outbox(_Sender):
    """Messages are stored, then posted one at a time in order, each attempt with the same
    ``client_msg_id``, until the server answers (:meth:`_Sender._failed` says what is retried).
    A :class:`caas_client.Realtime` given this outbox also acknowledges a message when its event
    arrives on the socket.

    ``async with Outbox(client) as outbox: outbox.send("room", "hi")`` runs the sender in the
    background; or call :meth:`flush` yourself."""

    def __init__(
        self,
        client: AsyncClient,
        store: OutboxStore | None = None,
        *,
        backoff: Backoff | None = None,
        on_acked: Callable[[Ack], None] | None = None,
        on_rejected: Callable[[Pending, CaasError], None] | None = None,
        on_retry: Callable[[Pending, Exception, int], None] | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(client, store, backoff, on_acked, on_rejected, on_retry, max_attempts)
        self.client = client
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

    def _queued(self) -> None:
        self._wake.set()

    async def acknowledged(self, client_msg_id: str) -> Ack:
        """Wait until the server has acknowledged the message (raises its :class:`CaasError` if
        it was rejected)."""
        if (ack := self.state.acked.get(client_msg_id)) is not None:
            return ack
        if (refused := self.refused.get(client_msg_id)) is not None:
            raise refused[1]
        future = self._settled.get(client_msg_id)  # futures only for messages someone waits for
        if future is None:
            future = self._settled[client_msg_id] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(future)

    def observe(self, event: dict[str, Any]) -> Ack | None:
        ack = super().observe(event)
        if ack is not None:
            self._settle(ack)
        return ack

    async def flush(self, timeout: float | None = None) -> None:
        """Deliver every pending message, retrying until each is acknowledged or rejected, or
        ``timeout`` seconds have passed (what is left stays pending)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (item := self.state.next()) is not None:
                    await self._deliver(item)

    async def run(self) -> None:
        """Deliver messages as they are queued, until cancelled; an unexpected error is logged
        (:attr:`errors`) and the message is tried again after a backoff, never given up silently."""
        while True:
            await self.flush()
            self._wake.clear()
            if self.state.next() is None:
                await self._wake.wait()

    async def _deliver(self, item: Pending) -> None:
        try:
            await self._attempt(item)
        except Exception as exc:  # a reply it cannot read, a store or a token callback that raised
            self._unexpected(exc)
            await asyncio.sleep(self.backoff.failed())

    async def _attempt(self, item: Pending) -> None:
        try:
            written = await self.client.call(self._call(item))
        except (ConnectionLost, CaasError) as exc:
            delay = self._failed(item, exc)
            if delay is not None:
                await asyncio.sleep(delay)
            elif (refused := self.refused.get(item.client_msg_id)) is not None:
                future = self._settled.pop(item.client_msg_id, None)
                if future is not None and not future.done():
                    future.set_exception(refused[1])
                    future.exception()  # read here too: the waiter may have gone
            return
        if (ack := self._written(item, written)) is not None:
            self._settle(ack)

    def _settle(self, ack: Ack) -> None:
        future = self._settled.pop(ack.client_msg_id, None)
        if future is not None and not future.done():
            future.set_result(ack)


class SyncOutbox(_Sender):
    """The :class:`Outbox` for a blocking :class:`Client` (a tenant's backend posting for its
    users, a script): :meth:`flush` sends what is pending, retrying, and returns when every
    message is acknowledged or rejected."""

    def __init__(
        self,
        client: Client,
        store: OutboxStore | None = None,
        *,
        backoff: Backoff | None = None,
        on_acked: Callable[[Ack], None] | None = None,
        on_rejected: Callable[[Pending, CaasError], None] | None = None,
        on_retry: Callable[[Pending, Exception, int], None] | None = None,
        max_attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(client, store, backoff, on_acked, on_rejected, on_retry, max_attempts)
        self.client = client
        self._sleep = sleep

    def flush(self, timeout: float | None = None) -> None:
        """Send what is pending, retrying, until every message is acknowledged or rejected, or
        ``timeout`` seconds have passed (what is left stays pending)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (item := self.state.next()) is not None:
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                written = self.client.call(self._call(item))
            except (ConnectionLost, CaasError) as exc:
                delay = self._failed(item, exc)
                if delay is not None:
                    self._sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
                continue
            except Exception as exc:  # as in Outbox: logged, tried again after a backoff
                self._unexpected(exc)
                self._sleep(self.backoff.failed())
                continue
            self._written(item, written)

    def acknowledged(self, client_msg_id: str) -> Ack | None:
        """The server's acknowledgement of the message, if it came."""
        return self.state.acked.get(client_msg_id)
