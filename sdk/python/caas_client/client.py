"""HTTP clients: :class:`AsyncClient` and :class:`Client`, the same operations over httpx.

A client holds one credential: a tenant API key (tenant backends: users, tokens, channels, keys)
or an end user's token (apps). After each of its own writes it remembers the answer's
``position`` and passes it as ``min_position`` to its later queries, so a read always sees the
client's own writes, whichever node answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from caas_client import calls
from caas_client import models as m
from caas_client.calls import Call, Json, Pager
from caas_client.errors import CaasError, ConnectionLost

T = TypeVar("T")
USER_AGENT = "caas-client-python/0.1"


class _Base:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.refreshes = 0  # tokens replaced after a 401
        self.position = 0  # the newest position this client wrote: min_position of its reads

    def observe_position(self, position: int | None) -> None:
        """Make later queries wait for ``position`` too: a write made by another client (or learnt
        from the websocket) that this one must read back."""
        if position is not None:
            self.position = max(self.position, position)

    @property
    def ws_url(self) -> str:
        return ("ws" + self.base_url.removeprefix("http")) + "/v1/ws"

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        query: dict[str, str | int] = dict(call.query)
        if call.reads and self.position:
            query["min_position"] = self.position
        headers = {"authorization": f"Bearer {self.token}", "user-agent": USER_AGENT}
        if call.idempotency_key is not None:
            headers["idempotency-key"] = call.idempotency_key
        request: dict[str, Any] = {"method": call.method, "url": self.base_url + call.path, "headers": headers}
        if query:
            request["params"] = query
        if call.body is not None or call.method in ("POST", "PUT", "PATCH"):
            request["json"] = call.body or {}
        return request

    def _answer(self, call: Call[T], response: httpx.Response) -> T:
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code >= 400:
            raise _error(response, data)
        if call.method != "GET" and isinstance(data, dict) and isinstance(data.get("position"), int):
            self.observe_position(data["position"])
        return call.parse(data)


def keyed(call: Call[T], idempotency_key: str | None) -> Call[T]:
    """``call`` sent with an ``Idempotency-Key``: retried with the same key after a lost answer,
    the write is applied once and the first answer is returned again (docs/api.md)."""
    return call if idempotency_key is None else replace(call, idempotency_key=idempotency_key)


def _error(response: httpx.Response, data: Any) -> CaasError:
    body = data.get("error") if isinstance(data, dict) else None
    retry = response.headers.get("retry-after")
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    if not isinstance(body, dict):
        return CaasError(response.status_code, "unexpected", response.text[:200], None, retry_after)
    return CaasError(
        response.status_code, str(body.get("code")), str(body.get("message")), body.get("details"), retry_after
    )


class AsyncClient(_Base):
    """The async HTTP client. ``async with AsyncClient(url, token) as client: …``"""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
        refresh_token: Callable[[], Awaitable[str]] | None = None,
    ):
        """``refresh_token``: called for a new token when the server answers 401 (an end user's
        token expired, or its key was rotated out); the request is then sent once more."""
        super().__init__(base_url, token)
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self.refresh_token = refresh_token
        self._refreshing = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(self, call: Call[T]) -> T:
        """Send one :class:`Call`; raises :class:`CaasError` for an error answer and
        :class:`ConnectionLost` when the answer is lost (the request may have been applied)."""
        for attempt in range(2):
            sent_with = self.token
            try:
                response = await self.http.request(**self._request(call))
            except httpx.TransportError as exc:
                raise ConnectionLost(str(exc) or type(exc).__name__) from exc
            if response.status_code == 401 and self.refresh_token is not None and attempt == 0:
                async with self._refreshing:  # one refresh for all the requests the old token failed
                    if self.token == sent_with:
                        self.token = await self.refresh_token()
                        self.refreshes += 1
                continue
            break
        return self._answer(call, response)

    async def pages(self, pager: Pager[T]) -> AsyncIterator[list[T]]:
        nxt: Call[Any] | None = pager.first
        while nxt is not None:
            items, nxt = pager.step(await self.call(nxt))
            yield items

    async def iterate(self, pager: Pager[T]) -> AsyncIterator[T]:
        async for items in self.pages(pager):
            for item in items:
                yield item

    # pagination
    def history(self, channel_id: str, after_seq: int = 0, limit: int | None = None) -> AsyncIterator[m.Message]:
        return self.iterate(calls.history(channel_id, after_seq, limit))

    def history_backwards(self, channel_id: str, before_seq: int | None = None) -> AsyncIterator[m.Message]:
        return self.iterate(calls.history_backwards(channel_id, before_seq))

    def channels(self, limit: int | None = None) -> AsyncIterator[m.Channel]:
        return self.iterate(calls.channels(limit))

    def events(self, after_position: int = 0, types: list[str] | None = None) -> AsyncIterator[m.EventOut]:
        return self.iterate(calls.events(after_position, types=types))

    # tenant administration
    async def put_user(
        self, user_id: str, name: str, metadata: Json | None = None, idempotency_key: str | None = None
    ) -> m.UserWritten:
        return await self.call(keyed(calls.put_user(user_id, name, metadata), idempotency_key))

    async def create_token(self, user_id: str, ttl_seconds: int | None = None) -> m.Token:
        return await self.call(calls.create_token(user_id, ttl_seconds))

    async def create_api_key(self, name: str | None = None, idempotency_key: str | None = None) -> m.ApiKeyCreated:
        return await self.call(keyed(calls.create_api_key(name), idempotency_key))

    async def revoke_api_key(self, key_id: str) -> m.Written:
        return await self.call(calls.revoke_api_key(key_id))

    async def rotate_signing_key(self, idempotency_key: str | None = None) -> m.SigningKeyRotated:
        return await self.call(keyed(calls.rotate_signing_key(), idempotency_key))

    # channels and messages
    async def create_channel(
        self,
        members: list[str],
        channel_id: str | None = None,
        name: str | None = None,
        kind: str = "group",
        idempotency_key: str | None = None,
    ) -> m.ChannelWritten:
        return await self.call(keyed(calls.create_channel(members, channel_id, name, kind), idempotency_key))

    async def get_channel(self, channel_id: str) -> m.Channel:
        return await self.call(calls.get_channel(channel_id))

    async def add_member(
        self, channel_id: str, user_id: str, role: str | None = None, idempotency_key: str | None = None
    ) -> m.ChannelWritten:
        return await self.call(keyed(calls.add_member(channel_id, user_id, role), idempotency_key))

    async def remove_member(
        self, channel_id: str, user_id: str, idempotency_key: str | None = None
    ) -> m.ChannelWritten:
        return await self.call(keyed(calls.remove_member(channel_id, user_id), idempotency_key))

    async def post_message(
        self, channel_id: str, text: str, idempotency_key: str | None = None, **fields: Any
    ) -> m.MessageWritten:
        """``fields``: ``client_msg_id``, ``parent_id``, ``attachments``, ``user_id`` (API key)."""
        return await self.call(keyed(calls.post_message(channel_id, {"text": text, **fields}), idempotency_key))

    async def edit_message(
        self, channel_id: str, message_id: str, text: str, idempotency_key: str | None = None
    ) -> m.MessageWritten:
        return await self.call(keyed(calls.edit_message(channel_id, message_id, text), idempotency_key))

    async def delete_message(self, channel_id: str, message_id: str) -> m.MessageWritten:
        return await self.call(calls.delete_message(channel_id, message_id))

    async def messages(
        self, channel_id: str, before_seq: int | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> m.MessagePage:
        return await self.call(calls.messages(channel_id, before_seq, after_seq, limit))

    async def thread(self, channel_id: str, message_id: str, limit: int | None = None) -> m.Thread:
        return await self.call(calls.thread(channel_id, message_id, limit))

    async def add_reaction(
        self, channel_id: str, message_id: str, emoji: str, idempotency_key: str | None = None
    ) -> m.MessageWritten:
        return await self.call(keyed(calls.add_reaction(channel_id, message_id, emoji), idempotency_key))

    async def remove_reaction(
        self, channel_id: str, message_id: str, emoji: str, idempotency_key: str | None = None
    ) -> m.MessageWritten:
        return await self.call(keyed(calls.remove_reaction(channel_id, message_id, emoji), idempotency_key))

    async def mark_read(self, channel_id: str, seq: int, idempotency_key: str | None = None) -> m.ChannelWritten:
        return await self.call(keyed(calls.mark_read(channel_id, seq), idempotency_key))

    async def unread_count(self, channel_id: str) -> int | None:
        return (await self.get_channel(channel_id)).unread_count

    async def typing(self, channel_id: str) -> m.TypingDelivered:
        return await self.call(calls.typing(channel_id))

    async def presence(self, user_ids: list[str]) -> dict[str, m.UserPresence]:
        """Any number of users: asked for 100 at a time (the server's limit per request)."""
        found: dict[str, m.UserPresence] = {}
        for call in calls.presence_calls(user_ids):
            part: dict[str, m.UserPresence] = await self.call(call)
            found.update(part)
        return found

    async def channel_presence(self, channel_id: str) -> m.ChannelPresence:
        return await self.call(calls.channel_presence(channel_id))


class Client(_Base):
    """The blocking HTTP client, for scripts and tenant backends without an event loop."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        refresh_token: Callable[[], str] | None = None,
    ):
        """``refresh_token``: as for :class:`AsyncClient`, a plain function."""
        super().__init__(base_url, token)
        self.http = http or httpx.Client(timeout=timeout)
        self.refresh_token = refresh_token
        self._refreshing = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def call(self, call: Call[T]) -> T:
        """Send one :class:`Call` (see :meth:`AsyncClient.call`)."""
        for attempt in range(2):
            sent_with = self.token
            try:
                response = self.http.request(**self._request(call))
            except httpx.TransportError as exc:
                raise ConnectionLost(str(exc) or type(exc).__name__) from exc
            if response.status_code == 401 and self.refresh_token is not None and attempt == 0:
                with self._refreshing:  # threads that failed with the same token refresh it once
                    if self.token == sent_with:
                        self.token = self.refresh_token()
                        self.refreshes += 1
                continue
            break
        return self._answer(call, response)

    def pages(self, pager: Pager[T]) -> Iterator[list[T]]:
        nxt: Call[Any] | None = pager.first
        while nxt is not None:
            items, nxt = pager.step(self.call(nxt))
            yield items

    def iterate(self, pager: Pager[T]) -> Iterator[T]:
        for items in self.pages(pager):
            yield from items

    # pagination
    def history(self, channel_id: str, after_seq: int = 0, limit: int | None = None) -> Iterator[m.Message]:
        return self.iterate(calls.history(channel_id, after_seq, limit))

    def history_backwards(self, channel_id: str, before_seq: int | None = None) -> Iterator[m.Message]:
        return self.iterate(calls.history_backwards(channel_id, before_seq))

    def channels(self, limit: int | None = None) -> Iterator[m.Channel]:
        return self.iterate(calls.channels(limit))

    def events(self, after_position: int = 0, types: list[str] | None = None) -> Iterator[m.EventOut]:
        return self.iterate(calls.events(after_position, types=types))

    # tenant administration
    def put_user(
        self, user_id: str, name: str, metadata: Json | None = None, idempotency_key: str | None = None
    ) -> m.UserWritten:
        return self.call(keyed(calls.put_user(user_id, name, metadata), idempotency_key))

    def create_token(self, user_id: str, ttl_seconds: int | None = None) -> m.Token:
        return self.call(calls.create_token(user_id, ttl_seconds))

    def create_api_key(self, name: str | None = None, idempotency_key: str | None = None) -> m.ApiKeyCreated:
        return self.call(keyed(calls.create_api_key(name), idempotency_key))

    def revoke_api_key(self, key_id: str) -> m.Written:
        return self.call(calls.revoke_api_key(key_id))

    def rotate_signing_key(self, idempotency_key: str | None = None) -> m.SigningKeyRotated:
        return self.call(keyed(calls.rotate_signing_key(), idempotency_key))

    # channels and messages
    def create_channel(
        self,
        members: list[str],
        channel_id: str | None = None,
        name: str | None = None,
        kind: str = "group",
        idempotency_key: str | None = None,
    ) -> m.ChannelWritten:
        return self.call(keyed(calls.create_channel(members, channel_id, name, kind), idempotency_key))

    def get_channel(self, channel_id: str) -> m.Channel:
        return self.call(calls.get_channel(channel_id))

    def add_member(
        self, channel_id: str, user_id: str, role: str | None = None, idempotency_key: str | None = None
    ) -> m.ChannelWritten:
        return self.call(keyed(calls.add_member(channel_id, user_id, role), idempotency_key))

    def remove_member(self, channel_id: str, user_id: str, idempotency_key: str | None = None) -> m.ChannelWritten:
        return self.call(keyed(calls.remove_member(channel_id, user_id), idempotency_key))

    def post_message(
        self, channel_id: str, text: str, idempotency_key: str | None = None, **fields: Any
    ) -> m.MessageWritten:
        """``fields``: ``client_msg_id``, ``parent_id``, ``attachments``, ``user_id`` (API key)."""
        return self.call(keyed(calls.post_message(channel_id, {"text": text, **fields}), idempotency_key))

    def edit_message(
        self, channel_id: str, message_id: str, text: str, idempotency_key: str | None = None
    ) -> m.MessageWritten:
        return self.call(keyed(calls.edit_message(channel_id, message_id, text), idempotency_key))

    def delete_message(self, channel_id: str, message_id: str) -> m.MessageWritten:
        return self.call(calls.delete_message(channel_id, message_id))

    def messages(
        self, channel_id: str, before_seq: int | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> m.MessagePage:
        return self.call(calls.messages(channel_id, before_seq, after_seq, limit))

    def thread(self, channel_id: str, message_id: str, limit: int | None = None) -> m.Thread:
        return self.call(calls.thread(channel_id, message_id, limit))

    def add_reaction(
        self, channel_id: str, message_id: str, emoji: str, idempotency_key: str | None = None
    ) -> m.MessageWritten:
        return self.call(keyed(calls.add_reaction(channel_id, message_id, emoji), idempotency_key))

    def remove_reaction(
        self, channel_id: str, message_id: str, emoji: str, idempotency_key: str | None = None
    ) -> m.MessageWritten:
        return self.call(keyed(calls.remove_reaction(channel_id, message_id, emoji), idempotency_key))

    def mark_read(self, channel_id: str, seq: int, idempotency_key: str | None = None) -> m.ChannelWritten:
        return self.call(keyed(calls.mark_read(channel_id, seq), idempotency_key))

    def unread_count(self, channel_id: str) -> int | None:
        return self.get_channel(channel_id).unread_count

    def typing(self, channel_id: str) -> m.TypingDelivered:
        return self.call(calls.typing(channel_id))

    def presence(self, user_ids: list[str]) -> dict[str, m.UserPresence]:
        """Any number of users: asked for 100 at a time (the server's limit per request)."""
        found: dict[str, m.UserPresence] = {}
        for call in calls.presence_calls(user_ids):
            part: dict[str, m.UserPresence] = self.call(call)
            found.update(part)
        return found

    def channel_presence(self, channel_id: str) -> m.ChannelPresence:
        return self.call(calls.channel_presence(channel_id))
