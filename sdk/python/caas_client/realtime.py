""":class:`Realtime`: one websocket that keeps its channels' timelines through any disconnect.

Each :class:`Channel` remembers the last ``seq`` it delivered. Whenever the socket goes away
(the network, a server restart, a close by the server) the connection comes back and every
channel subscribes again with ``since_seq``: the server replays what was missed, the timeline
drops what was seen already, and the application reads each event once, in order.

How a close is handled (:func:`next_step`): 1013 (the client fell behind) reconnects at once,
once in a row (then with a backoff, until a connection delivers events again);
1008 (the token is no longer accepted) asks the app's ``refresh_token`` callback for a new one,
then reconnects; 1009 (a frame of ours was too big) is raised to the channels and ends the
connection; anything else (1011, 1012 on a server restart, a dropped connection) reconnects after
a backoff with jitter, which resets only after a connection delivered events or stayed up for
``stable_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from caas_client.backoff import Backoff
from caas_client.delivery import Outbox
from caas_client.errors import FrameTooBig, FrameUnreadable, SocketRefused, SubscriptionRefused
from caas_client.frames import (
    ChannelEvent,
    CompactEvent,
    ErrorFrame,
    EventFrame,
    Presence,
    SendTyping,
    ServerFrame,
    Subscribe,
    Subscribed,
    SubscribePresence,
    Typing,
    Unreadable,
    Unsubscribe,
    Unsubscribed,
    channel_of,
    envelope_of,
    parse_frame,
)
from caas_client.throttle import Bucket, Throttle
from caas_client.timeline import Timeline, Verdict

log = logging.getLogger("caas_client")
TokenRefresh = Callable[[], Awaitable[str]] | Callable[[], str]
POLICY_VIOLATION, TOO_BIG, TRY_AGAIN_LATER = 1008, 1009, 1013


class Step(Enum):
    RESUME_NOW = "resume_now"
    REFRESH_TOKEN = "refresh_token"
    FAIL = "fail"
    BACK_OFF = "back_off"


MAX_REFRESH_FAILURES = 5  # refresh_token failing this many times in a row ends the channels
MAX_IMMEDIATE_RESUMES = 1  # reconnects at once (1013, a refreshed token) before backing off


def next_step(code: int | None, last_error: str | None, immediate_resumes: int) -> Step:
    """What to do after the socket closed with ``code`` (``None``: no close frame, the network
    or the process went away). ``last_error`` is the code of the error frame just before the
    close; ``immediate_resumes`` how many reconnects in a row were made at once since the last
    connection that delivered an event: 1013 resumes at once only up to
    :data:`MAX_IMMEDIATE_RESUMES` times, so that clients a server sheds together do not all come
    back together, again and again. 1011, 1012 (a restart) and a drop back off."""
    if code == TOO_BIG:
        return Step.FAIL
    if code == POLICY_VIOLATION:
        return Step.REFRESH_TOKEN if last_error in (None, "unauthenticated") else Step.BACK_OFF
    if code == TRY_AGAIN_LATER and immediate_resumes < MAX_IMMEDIATE_RESUMES:
        return Step.RESUME_NOW
    return Step.BACK_OFF


class _End:
    """Put in a channel's queue when it ends: ``error`` is raised to the reader; ``None`` (closed
    by the app: :meth:`Realtime.close`, :meth:`Realtime.unsubscribe`) ends its ``async for``."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error


class Channel:
    r"""A subscribed channel's timeline. ``async for frame in channel`` yields its event frames
    in ``seq`` order, each once, across reconnects; :meth:`caught_up` waits for the head. They
    are :class:`EventFrame`\ s, or :class:`CompactEvent`\ s if the :class:`Realtime` was made
    with ``frames="compact"``."""

    def __init__(self, realtime: Realtime, channel_id: str, since_seq: int | None) -> None:
        self.realtime = realtime
        self.channel_id = channel_id
        self.timeline = Timeline(seq=since_seq)
        self.on_typing: Callable[[Typing], None] | None = None
        self._queue: asyncio.Queue[ChannelEvent | _End] = asyncio.Queue()
        self._space = asyncio.Event()  # set when the reader took a frame or the channel ended
        self._caught_up = asyncio.Event()
        self.active = True
        self.gap_backoff = Backoff()  # resubscribes after a gap, one at a time
        self._confirmed = False  # subscribed on the current socket
        self._resubscribing = False

    @property
    def seq(self) -> int | None:
        """The last seq delivered: where a resume starts."""
        return self.timeline.seq

    def __aiter__(self) -> AsyncIterator[ChannelEvent]:
        return self

    @property
    def buffered(self) -> int:
        """Frames received and not yet read; at most the Realtime's ``channel_buffer`` (then the
        socket is not read until the app catches up, and the server's flow control applies)."""
        return self._queue.qsize()

    async def __anext__(self) -> ChannelEvent:
        item = await self._queue.get()
        self._space.set()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later read ends too
            if item.error is None:
                raise StopAsyncIteration
            raise item.error
        return item

    def drain(self) -> list[ChannelEvent]:
        """The frames already received and not yet read, without waiting."""
        out: list[ChannelEvent] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _End):
                self._queue.put_nowait(item)
                break
            out.append(item)
        return out

    @property
    def is_caught_up(self) -> bool:
        """Whether the channel has delivered up to the head of its latest subscription."""
        return self._caught_up.is_set()

    async def caught_up(self) -> None:
        """Wait until the channel has delivered up to the head it had when (re)subscribed."""
        await self._caught_up.wait()

    async def typing(self) -> bool:
        """Tell the channel that the user is typing; throttled as the server throttles (``False``
        when nothing was sent)."""
        return await self.realtime.typing(self.channel_id)

    async def unsubscribe(self) -> None:
        await self.realtime.unsubscribe(self.channel_id)

    # called by Realtime
    def _subscribed(self, head_seq: int) -> None:
        self._resubscribing = False
        self._confirmed = True
        self.timeline.subscribed(head_seq)
        self._check()

    def _check(self) -> None:
        if self.timeline.caught_up:
            self._caught_up.set()

    def _end(self, error: Exception | None) -> None:
        if self.active:
            self.active = False
            self._queue.put_nowait(_End(error))
            self._space.set()


@dataclass
class Stats:
    """What the connection went through: sockets opened, closes by code (``None``: no close
    frame), token refreshes."""

    connects: int = 0
    closes: dict[int | None, int] = field(default_factory=dict)
    refreshes: int = 0
    callback_errors: int = 0  # exceptions raised by the app's callbacks (logged, then ignored)

    def closed(self, code: int | None) -> None:
        self.closes[code] = self.closes.get(code, 0) + 1


class Realtime:
    """The websocket of one end user. ``async with Realtime(url, token) as rt:
    channel = rt.channel("room", since_seq=0)``.

    ``refresh_token`` (sync or async) returns a new token when the server refuses the current
    one (1008). ``outbox``: an :class:`Outbox` whose messages are acknowledged when their events
    arrive here. ``on_presence``, ``on_error``: callbacks for presence frames and for error
    frames that name no channel. ``frames="compact"`` asks the server for compact event frames
    (:class:`CompactEvent`, about a third of the bytes; docs/websocket-protocol.md)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        refresh_token: TokenRefresh | None = None,
        outbox: Outbox | None = None,
        backoff: Backoff | None = None,
        typing_throttle_seconds: float = 2.0,
        on_presence: Callable[[Presence], None] | None = None,
        on_error: Callable[[ErrorFrame], None] | None = None,
        max_frame_bytes: int = 16 * 2**20,
        stable_seconds: float = 30.0,
        channel_buffer: int = 1000,
        frames: Literal["full", "compact"] = "full",
    ) -> None:
        base = base_url.rstrip("/")  # http(s)://host[:port], as for the HTTP clients
        self.ws_url = ("ws" + base.removeprefix("http") if base.startswith("http") else base) + "/v1/ws"
        self.frames = frames
        self.token = token
        self.refresh_token = refresh_token
        self.outbox = outbox
        self.backoff = backoff or Backoff()
        self.throttle = Throttle(typing_throttle_seconds)
        self.pacer = Bucket()  # every frame this client sends, kept under the server's rate limit
        self.on_presence = on_presence
        self.on_error = on_error
        self.max_frame_bytes = max_frame_bytes
        self.stable_seconds = stable_seconds  # a connection up this long resets the backoff
        self.channel_buffer = channel_buffer  # unread frames per channel before the socket waits
        self.channels: dict[str, Channel] = {}
        self.watched: list[str] = []
        self.connected = asyncio.Event()
        self.stats = Stats()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: Exception | None = None
        self._resending = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._refresh_failures = 0  # in a row; MAX_REFRESH_FAILURES end the channels

    async def __aenter__(self) -> Realtime:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Close the socket; every channel's reader ends (its ``async for`` stops)."""
        for channel in self.channels.values():
            channel._end(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._ws is not None:
            await self._ws.close()

    # the application's side --------------------------------------------------------------------
    def channel(self, channel_id: str, since_seq: int | None = None) -> Channel:
        """Subscribe to ``channel_id``: every event after ``since_seq`` (``None``: from now on)."""
        channel = self.channels.get(channel_id)
        if channel is None:
            channel = Channel(self, channel_id, since_seq)
            if self._failure is not None:  # the connection has ended for good: so does the channel
                channel._end(self._failure)
                return channel
            self.channels[channel_id] = channel
            self._spawn(self._subscribe(channel))
        return channel

    async def unsubscribe(self, channel_id: str) -> None:
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            channel._end(None)  # its reader stops
            await self._send(Unsubscribe(type="unsubscribe", channel_id=channel_id))

    async def watch_presence(self, user_ids: list[str]) -> None:
        """Presence frames (to ``on_presence``) for these users: now, then on every change."""
        fresh = [u for u in user_ids if u not in self.watched]
        self.watched += fresh
        if fresh:
            await self._send(SubscribePresence(type="subscribe_presence", user_ids=fresh))

    async def typing(self, channel_id: str) -> bool:
        if not self.throttle.allow(channel_id, asyncio.get_running_loop().time()):
            return False
        return await self._send(SendTyping(type="typing", channel_id=channel_id))

    # the connection --------------------------------------------------------------------------
    async def _send(self, frame: Subscribe | Unsubscribe | SendTyping | SubscribePresence) -> bool:
        """Send now if connected (a reconnect re-sends subscriptions and watches by itself)."""
        ws = self._ws
        if ws is None:
            return False
        loop = asyncio.get_running_loop()
        delay = self.pacer.wait(loop.time())
        if delay:
            await asyncio.sleep(delay)
            if self._ws is not ws:  # gone meanwhile: the reconnect sends it again
                return False
        try:
            await ws.send(frame.model_dump_json(exclude_none=True))
        except ConnectionClosed:
            return False
        return True

    async def _subscribe(self, channel: Channel) -> None:
        await self._send(
            Subscribe(type="subscribe", channel_id=channel.channel_id, since_seq=channel.timeline.since_seq)
        )

    def _spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background, held until it ends (the loop keeps only weak references
        to tasks); what it raises is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("caas_client: a background task failed: %r", error, exc_info=error)

    async def _run(self) -> None:
        try:
            await self._reconnecting()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a bad URL: the channels raise it rather than wait forever
            self._fail(exc)

    async def _reconnecting(self) -> None:
        immediate = 0
        loop = asyncio.get_running_loop()
        while True:
            opened = loop.time()
            code, last_error, progressed = await self._connection()
            self.stats.closed(code)
            if progressed or loop.time() - opened >= self.stable_seconds:
                self.backoff.reset()  # only a connection that did some good ends the backoff
                immediate = 0
            step = next_step(code, last_error, immediate)
            if step is Step.FAIL:
                self._fail(FrameTooBig(f"the server closed the socket with {code}: a frame was too big"))
                return
            if step is Step.REFRESH_TOKEN:
                if self.refresh_token is None:
                    self._fail(SocketRefused("the server refused the token (1008) and there is no refresh_token"))
                    return
                if await self._refresh() and immediate < MAX_IMMEDIATE_RESUMES:
                    immediate += 1
                    continue
                if self._failure is not None:
                    return
            if step is Step.RESUME_NOW:
                immediate += 1
                continue
            await asyncio.sleep(self.backoff.failed())

    async def _refresh(self) -> bool:
        """A new token from the app's callback; ``False`` if the callback failed (the next
        refusal asks again, after a backoff)."""
        assert self.refresh_token is not None
        try:
            token = self.refresh_token()
            self.token = await token if inspect.isawaitable(token) else token
        except Exception as exc:
            self._refresh_failures += 1
            log.warning("caas_client: refresh_token failed (%d in a row): %r", self._refresh_failures, exc)
            if self._refresh_failures >= MAX_REFRESH_FAILURES:
                refused = SocketRefused(f"refresh_token failed {self._refresh_failures} times in a row")
                refused.__cause__ = exc
                self._fail(refused)
            return False
        self._refresh_failures = 0
        self.stats.refreshes += 1
        return True

    def _fail(self, error: Exception) -> None:
        self._failure = error
        for channel in self.channels.values():
            channel._end(error)

    async def _connection(self) -> tuple[int | None, str | None, bool]:
        """One socket, from connect to close: (close code, last error frame's code, progressed)."""
        last_error: str | None = None
        progressed = False
        try:
            async with connect(
                f"{self.ws_url}?token={quote(self.token, safe='')}"
                + ("&frames=compact" if self.frames == "compact" else ""),
                max_size=self.max_frame_bytes,
                compression=None,
                open_timeout=10,
            ) as ws:
                self._ws = ws
                self.stats.connects += 1
                self.connected.set()
                for channel in self.channels.values():
                    channel._confirmed = False
                    channel._caught_up.clear()  # re-armed: the head to reach is the new subscription's
                self._spawn(self._subscribe_all())  # paced: frames are read meanwhile
                async for raw in ws:
                    frame = parse_frame(raw)
                    if frame is None:
                        continue
                    if isinstance(frame, Unreadable):
                        await self._unreadable(frame)
                        continue
                    if isinstance(frame, ErrorFrame):
                        last_error = frame.code
                    progressed = self._dispatch(frame) or progressed
                    if isinstance(frame, EventFrame | CompactEvent):
                        await self._room_in(channel_of(frame))
            return (ws.close_code, last_error, progressed)
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd is not None else None, last_error, progressed)
        except (OSError, InvalidHandshake, TimeoutError):
            return (None, last_error, progressed)
        finally:
            self._ws = None
            self.connected.clear()

    def _dispatch(self, frame: ServerFrame) -> bool:
        """Handle one frame; ``True`` if it delivered an event (a ``subscribed`` is no progress: the
        server sends it before the replay, also when it is about to close the socket)."""
        if isinstance(frame, EventFrame | CompactEvent):
            return self._event(frame)
        if isinstance(frame, Subscribed):
            channel = self.channels.get(frame.channel_id)
            if channel is not None:
                channel._subscribed(frame.head_seq)
            return False
        if isinstance(frame, Typing):
            channel = self.channels.get(frame.channel_id)
            if channel is not None and channel.on_typing is not None:
                self._callback(channel.on_typing, frame)
        elif isinstance(frame, Presence):
            if self.on_presence is not None:
                self._callback(self.on_presence, frame)
        elif isinstance(frame, ErrorFrame):
            self._error(frame)
        elif isinstance(frame, Unsubscribed):
            pass
        return False

    def _event(self, frame: ChannelEvent) -> bool:
        channel = self.channels.get(channel_of(frame))
        if channel is None:
            return False
        verdict = channel.timeline.offer(frame.seq)
        if verdict is Verdict.GAP:  # never from a correct server; resubscribe from what we have
            if not channel._resubscribing:  # one at a time, backing off: the replay fills the gap
                channel._resubscribing = True
                self._spawn(self._resubscribe(channel, channel.gap_backoff.failed()))
            return False
        if verdict is Verdict.DUPLICATE:
            return False
        channel.gap_backoff.reset()
        if self.outbox is not None:  # it calls the app's on_acked
            self._callback(self.outbox.observe, envelope_of(frame))
        channel._queue.put_nowait(frame)
        channel._check()
        return True

    async def _room_in(self, channel_id: str) -> None:
        """Stop reading the socket while the channel's reader is ``channel_buffer`` frames behind."""
        channel = self.channels.get(channel_id)
        while channel is not None and channel.active and channel.buffered >= self.channel_buffer:
            channel._space.clear()
            await channel._space.wait()

    async def _subscribe_all(self) -> None:
        for channel in list(self.channels.values()):
            await self._subscribe(channel)
        if self.watched:
            await self._send(SubscribePresence(type="subscribe_presence", user_ids=self.watched))

    async def _resend_unconfirmed(self, delay: float) -> None:
        """The server dropped a frame of ours (rate_limited names no channel): after ``delay``,
        subscribe again every channel this socket has not confirmed yet."""
        if self._resending:
            return
        self._resending = True
        try:
            await asyncio.sleep(delay)
            for channel in list(self.channels.values()):
                if not channel._confirmed:
                    await self._subscribe(channel)
        finally:
            self._resending = False

    async def _resubscribe(self, channel: Channel, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.channels.get(channel.channel_id) is channel:
            await self._subscribe(channel)

    async def _unreadable(self, frame: Unreadable) -> None:
        """A frame that does not fit its model. An event cannot be skipped (its seq would be a
        hole that every resubscribe replays again): its channel ends with the error."""
        log.warning("caas_client: unreadable %s frame: %s", frame.type, frame.error)
        if frame.type not in ("event", "ev") or frame.channel_id is None:
            return
        channel = self.channels.pop(frame.channel_id, None)
        if channel is None:
            return
        error = FrameUnreadable(f"an event of channel {frame.channel_id} does not fit the frame model")
        error.__cause__ = frame.error
        channel._end(error)
        await self._send(Unsubscribe(type="unsubscribe", channel_id=frame.channel_id))

    def _error(self, frame: ErrorFrame) -> None:
        channel = self.channels.get(frame.channel_id) if frame.channel_id else None
        if channel is not None and frame.code in ("forbidden", "not_found"):
            del self.channels[channel.channel_id]  # removed, banned, or never a member: it ends
            channel._end(PermissionError(f"{frame.code}: {frame.message}"))
            return
        if channel is not None and frame.code == "invalid_request" and not channel._confirmed:
            del self.channels[channel.channel_id]  # e.g. too many subscriptions on this socket
            channel._end(SubscriptionRefused(f"{frame.code}: {frame.message}"))
            return
        if frame.code == "rate_limited" and frame.channel_id is None:
            self._spawn(self._resend_unconfirmed(frame.retry_after or 1.0))
        if self.on_error is not None:
            self._callback(self.on_error, frame)

    def _callback(self, callback: Callable[[Any], object], argument: object) -> None:
        """Call one of the app's callbacks: what it raises is logged and counted, never taken for
        a network failure nor allowed to end the connection."""
        try:
            callback(argument)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("caas_client: a callback raised (%r)", callback)
