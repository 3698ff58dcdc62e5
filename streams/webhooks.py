"""Outbound webhooks: the delivery processor both backends run (docs/webhooks.md).

One :class:`Dispatcher` follows the log. It runs inside ``caas serve`` on the embedded
backend and inside ``caas worker`` on Kafka (woken by the Faust agent that keeps the read
models); the composition root (``api/bootstrap.py``) gives it what differs:

- ``history``: the tenant's events in position order (the log itself, or the event index);
- ``horizon``: the position up to which ``history`` is complete, contiguous and durable (the
  read models' applied position, or the event index's checkpoint). Nothing past it is read:
  an endpoint's cursor only moves over positions it could see all of.

Each endpoint has a cursor (the position of the last event delivered or skipped), a
backoff and a delivery log, kept in the read store. An endpoint with work has one task; an
idle endpoint has none, and the processor as a whole waits for new events (``on_indexed``)
or one shared poll, never a timer per endpoint. Sends take a slot of :class:`FairSlots`
(bounded overall and per tenant, freed slots handed to tenants in turn), each attempt bounded
by the sender's total timeout, so a tenant's hanging endpoints hold at most its own share of
slots for at most that long and never delay another tenant's sends.
Events go out one at a time per endpoint in log order, so a channel's order is kept; the
cursor moves only after a 2xx (at least once: receivers dedupe by the event id).

However many processors run (every ``caas worker``), only the holder of the lease (a document
in the read store, taken conditionally on its version and renewed) sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import random
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import structlog

from commands.ports import EventHistory
from commands.service import CommandEnvelope, Commands
from domain.base import format_time
from domain.events import Event, StreamId, stream_name
from domain.webhook import DELIVERABLE, DisableWebhook, subscribed
from projections.ports import Doc, Op, ReadStore
from projections.webhooks import SCOPE

log = structlog.get_logger("caas.webhooks")

STATE = "webhook_state"  # collection: one cursor document per endpoint, in SCOPE
DELIVERIES = "webhook_deliveries"  # collection: the delivery log, in the tenant's scope
WRITES = "webhook-deliveries"  # the checkpoint the processor's writes go under: the last guard it used
SIGNATURE_HEADER = "CAAS-Signature"
STAMP = re.compile(r"[0-9]{1,12}")
DIGEST = re.compile(r"[0-9a-f]{64}")


# --- secrets and signatures --------------------------------------------------------------
def endpoint_secret(server_key: str, tenant_id: str, endpoint_id: str, generation: int = 0) -> str:
    """The endpoint's signing secret: derived from the server's key, the endpoint's id and the
    secret's generation (0 at creation, then the seq of each rotation), so it is never stored
    and a retried creation or rotation shows the same one."""
    message = f"caas-webhook\n{tenant_id}\n{endpoint_id}" + (f"\n{generation}" if generation else "")
    mac = hmac.new(server_key.encode(), message.encode(), hashlib.sha256)
    return "whsec_" + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def sign(secret: str, timestamp: int, body: bytes, *others: str) -> str:
    """The ``CAAS-Signature`` header: HMAC-SHA256 of ``<timestamp>.<body>`` with the secret
    (and one ``v1`` more per secret in ``others``: the old one during a rotation's grace)."""
    digests = [
        hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest() for key in (secret, *others)
    ]
    return ",".join([f"t={timestamp}", *(f"v1={d}" for d in digests)])


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None) -> bool:
    """Whether ``header`` (``CAAS-Signature``) signs ``body`` with ``secret``, made within
    ``tolerance`` seconds of ``now``: what a receiver checks (docs/webhooks.md)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamps = parts.get("t", [])
    if not stamps or not STAMP.fullmatch(stamps[0]):  # ASCII digits only ("²".isdigit() is true)
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]  # one secret: one v1
    given = [v for v in parts.get("v1", []) if DIGEST.fullmatch(v)]  # compare_digest refuses non-ASCII
    return any(hmac.compare_digest(expected, v) for v in given)


def payload(event: Event, endpoint_id: str) -> bytes:
    """The JSON body delivered for ``event`` (the same on every attempt)."""
    kind = StreamId.parse(event.stream)
    return orjson.dumps(
        {
            "id": event.event_id,
            "type": event.type,
            "webhook_id": endpoint_id,
            "tenant_id": event.tenant_id,
            "stream": event.stream,
            "channel_id": kind.id if kind.kind == "channel" else None,
            "seq": event.seq,
            "position": event.position,
            "occurred_at": event.occurred_at,
            "data": event.payload,
        }
    )


# --- the sender port ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt: ``status`` if a response came, else ``error`` (a message that never
    names a resolved address)."""

    status: int | None
    error: str | None
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender(Protocol):
    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Attempt: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Policy:
    retry_base: float = 5.0  # seconds before the first retry (then doubled, with jitter)
    retry_max: float = 3600.0  # the longest wait between attempts
    disable_after: float = 86400.0  # failing this long disables the endpoint
    concurrency: int = 32  # attempts in flight at once, over all endpoints
    tenant_concurrency: int = 4  # attempts in flight at once for one tenant's endpoints
    poll: float = 2.0  # the shared poll, besides the wake-ups on new events
    batch: int = 100
    log_kept: int = 1000  # delivery log entries kept per endpoint (the oldest overwritten)
    secret_grace: float = 86400.0  # seconds after a rotation the old secret signs too
    lease: float = 15.0  # seconds a processor's lease lasts unless renewed (renewed every third of it)

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before retry ``attempt`` (1 is the first retry): exponential, capped, with
        jitter (half to all of the step), so endpoints that failed together retry apart."""
        step = min(self.retry_max, self.retry_base * 2.0 ** min(attempt - 1, 40))
        return float(step * (0.5 + rand() / 2))


@dataclass(slots=True)
class Progress:
    """Where an endpoint is: kept in the read store (:data:`STATE`)."""

    cursor: int
    attempt: int = 0  # failed attempts at the event after the cursor
    failing_since: float | None = None
    next_at: float = 0.0
    replay_seq: int = 0
    config_version: int = 0  # the endpoint's configuration the backoff was judged on
    logged: int = 0  # delivery log entries written: the next goes in slot logged % log_kept

    def as_doc(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "attempt": self.attempt,
            "failing_since": self.failing_since,
            "next_at": self.next_at,
            "replay_seq": self.replay_seq,
            "config_version": self.config_version,
            "logged": self.logged,
        }


class FairSlots:
    """Send slots: at most ``total`` attempts in flight, at most ``per_tenant`` of one tenant's;
    a freed slot goes to the tenants waiting in turn (round-robin), so a tenant with many slow
    endpoints takes at most its own share and never queues ahead of another tenant's sends."""

    def __init__(self, total: int, per_tenant: int) -> None:
        self.total, self.per_tenant = total, max(1, min(per_tenant, total))
        self.busy = 0
        self.held: dict[str, int] = {}
        self.waiting: dict[str, deque[asyncio.Future[None]]] = {}  # in turn order (oldest turn first)

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self._acquire(tenant)
        try:
            yield
        finally:
            self._release(tenant)

    def _free(self, tenant: str) -> bool:
        return self.busy < self.total and self.held.get(tenant, 0) < self.per_tenant

    def _take(self, tenant: str) -> None:
        self.busy += 1
        self.held[tenant] = self.held.get(tenant, 0) + 1

    async def _acquire(self, tenant: str) -> None:
        if not self.waiting.get(tenant) and self._free(tenant):
            self._take(tenant)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(tenant, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted as it was cancelled: hand it on
                self._release(tenant)
            else:
                queue = self.waiting.get(tenant)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del self.waiting[tenant]
            raise

    def _release(self, tenant: str) -> None:
        self.busy -= 1
        self.held[tenant] -= 1
        if not self.held[tenant]:
            del self.held[tenant]
        granted = True
        while granted and self.busy < self.total:
            granted = False
            for waiter in list(self.waiting):
                if not self._free(waiter):
                    continue
                queue = self.waiting.pop(waiter)  # its turn: to the back of the order
                while queue and queue[0].done():  # cancelled while waiting
                    queue.popleft()
                if queue:
                    queue.popleft().set_result(None)
                    self._take(waiter)
                    granted = True
                if queue:
                    self.waiting[waiter] = queue
                if granted:
                    break


LEASE = "lease"  # the document in STATE naming the one processor that delivers
LEASE_WRITES = "webhook-lease"

MAX_UNWRITTEN = 2000  # delivery log entries queued before senders wait for the writer
PROGRESS_FIELDS = ("cursor", "attempt", "failing_since", "next_at", "replay_seq", "config_version", "logged")


class Dispatcher:
    """The delivery processor (see the module doc)."""

    def __init__(
        self,
        history: EventHistory,
        store: ReadStore,
        commands: Commands,
        sender: Sender,
        horizon: Callable[[], Awaitable[int]],
        server_key: str,
        policy: Policy = Policy(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self.store = store
        self.commands = commands
        self.sender = sender
        self.horizon = horizon
        self.server_key = server_key
        self.policy = policy
        self.clock = clock
        self.endpoints: dict[str, Doc] = {}
        self._by_tenant: dict[str, list[str]] = {}  # each tenant's endpoint keys
        self.progress: dict[str, Progress] = {}
        self.delivered = 0  # successful deliveries (benchmarks read it)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._kicks: dict[str, asyncio.Event] = {}  # wakes an endpoint waiting out its backoff
        self._slots = FairSlots(policy.concurrency, policy.tenant_concurrency)
        self._wake = asyncio.Event()
        self._refresh = True
        self._dirty: set[str] = set()  # tenants with new deliverable events
        self._again: set[str] = set()  # endpoints whose running task must look once more before it ends
        self._loop: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._states: dict[str, Op] = {}  # the latest cursor document of each endpoint, not yet written
        self._records: list[Op] = []  # delivery log entries not yet written
        self._written = asyncio.Event()  # set after each write, so a full buffer waits for it
        self._unwritten = asyncio.Event()
        self._rev = 0
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.leading = False  # holds the lease: the only processor sending
        self._lease_task: asyncio.Task[None] | None = None

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the store answers (else the start fails), then deliver while this process
        holds the lease: one processor sends, however many run (``caas worker`` on Kafka)."""
        await self.store.checkpoint(WRITES)
        await self._seed_lease()
        if await self._hold_lease():
            await self._lead()
        self._lease_task = asyncio.create_task(self._lease_loop(), name="caas-webhooks-lease")
        self._lease_task.add_done_callback(_report_exit)

    async def close(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
            self._lease_task = None
        leading = self.leading
        await self._follow()
        if leading:
            with contextlib.suppress(Exception):  # what is left, if the store answers (else: sent again)
                async with asyncio.timeout(5):
                    await self._write()
                    await self._release_lease()
        await self.sender.close()

    # the lease ------------------------------------------------------------------------------
    async def _seed_lease(self) -> None:
        """The lease document exists before anyone takes it, so every taking is conditional."""
        seed = Op(STATE, SCOPE, LEASE, 1, set={"holder": None, "expires": 0.0, "term": 1})
        await self.store.apply(LEASE_WRITES, [seed], 1)

    async def _hold_lease(self) -> bool:
        """Take or renew the lease if it is free, expired or ours. Two takers write the same
        next term: the store's guard keeps one write, and reading it back says whose."""
        now = self.clock()
        doc = await self.store.get(STATE, SCOPE, LEASE) or {"term": 0}
        if doc.get("holder") not in (None, self.holder) and float(doc.get("expires", 0.0)) > now:
            return False
        term = int(doc["term"]) + 1
        taken = {"holder": self.holder, "expires": now + self.policy.lease, "term": term}
        await self.store.apply(LEASE_WRITES, [Op(STATE, SCOPE, LEASE, term, set=taken)], term)
        held = await self.store.get(STATE, SCOPE, LEASE) or {}
        return held.get("holder") == self.holder and held.get("term") == term

    async def _release_lease(self) -> None:
        doc = await self.store.get(STATE, SCOPE, LEASE) or {}
        if doc.get("holder") == self.holder:
            term = int(doc["term"]) + 1
            freed = {"holder": None, "expires": 0.0, "term": term}
            await self.store.apply(LEASE_WRITES, [Op(STATE, SCOPE, LEASE, term, set=freed)], term)

    async def _lease_loop(self) -> None:
        """Renew the lease (or take it), and while it is held keep the processor's own tasks
        running: one that died (a bug) is reported and started again, not left dead."""
        renewed = self.clock()
        while True:
            await asyncio.sleep(self.policy.lease / 3)
            try:
                held = await self._hold_lease()
                renewed = self.clock() if held else renewed
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: lead on until the lease would have expired
                log.warning("webhook_lease_not_renewed", error=str(exc) or type(exc).__name__)
                held = self.leading and self.clock() - renewed < self.policy.lease * 2 / 3
            try:
                if held and self.leading and not self._alive():
                    log.error("webhook_dispatcher_restarted", holder=self.holder)
                    await self._follow()
                if held and not self.leading:
                    await self._lead()
                elif not held and self.leading:
                    log.warning("webhook_lease_lost", holder=self.holder)
                    await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away as it starts: tried again next round
                log.warning("webhook_dispatch_failed", error=str(exc) or type(exc).__name__)
                await self._follow()

    def _alive(self) -> bool:
        return all(task is not None and not task.done() for task in (self._loop, self._writer))

    async def _lead(self) -> None:
        """Start delivering: cursors read afresh (another processor may have moved them), the
        write guard going on from the last one stored."""
        self._rev = max(self._rev, await self.store.checkpoint(WRITES))
        self.progress, self._states, self._records = {}, {}, []
        await self._load()
        self.leading = True
        self._refresh = True  # the first round looks at every endpoint: its backlog since the last run
        self._wake.set()
        self._loop = asyncio.create_task(self._run(), name="caas-webhooks")
        self._loop.add_done_callback(_report_exit)
        self._writer = asyncio.create_task(self._write_loop(), name="caas-webhooks-writer")
        self._writer.add_done_callback(_report_exit)

    async def _follow(self) -> None:
        """Stop delivering (the lease is another's, or the processor closes)."""
        self.leading = False
        tasks = [t for t in (self._loop, self._writer, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop, self._writer, self._tasks = None, None, {}

    def on_indexed(self, events: Sequence[Event]) -> None:
        """The log has new events, readable through ``history`` up to ``horizon``."""
        for event in events:
            if event.type.startswith("Webhook"):
                self._refresh = True
            elif event.type in DELIVERABLE:
                self._dirty.add(event.tenant_id)
        if self._refresh or (self._dirty and self.endpoints):
            self._wake.set()

    # the shared loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.policy.poll
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            polled = not self._wake.is_set()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                loaded = self._refresh or polled
                if loaded:
                    await self._load()
                # only the dirty tenants' endpoints, unless the endpoints were loaded again (what
                # makes an endpoint pending, a webhook event or a first sight, comes with a load)
                keys = list(self.endpoints) if loaded else [k for t in dirty for k in self._by_tenant.get(t, ())]
                for key in keys:
                    doc = self.endpoints[key]
                    running = key in self._tasks and not self._tasks[key].done()
                    if running and doc["tenant"] in dirty:
                        self._again.add(key)  # it may be past its last read: it looks again before it ends
                    elif doc["enabled"] and not running and (doc["tenant"] in dirty or self._pending(key, doc)):
                        self._ensure_task(key)
                delay = self.policy.poll
            except Exception as exc:  # the store is away: say so, back off, go on
                log.warning("webhook_dispatch_failed", error=str(exc) or type(exc).__name__, retry_in=delay)
                self._refresh = True
                self._dirty |= dirty  # not lost: looked at on the next round
                delay = min(delay * 2, 30.0)

    def _pending(self, key: str, doc: Doc) -> bool:
        """Whether an endpoint whose tenant has no new events has work all the same: never seen
        by this process (its backlog since the last run), a replay asked, or its configuration
        changed. (The poll starts no task for an endpoint of a quiet tenant: nothing to send.)"""
        progress = self.progress.get(key)
        if progress is None or doc.get("replay_seq", 0) > progress.replay_seq:
            return True
        return int(doc.get("config_version", 0)) != progress.config_version

    async def _load(self) -> None:
        self._refresh = False
        docs = await self.store.find("webhooks", SCOPE, {"deleted": False})
        found = {doc["_id"]: doc for doc in docs}
        for missing in set(self.endpoints) - set(found):
            # pruned only when the read model says deleted: a document merely missing (the
            # collection swapped by a live rebuild) keeps its endpoint and cursor as they were
            doc = await self.store.get("webhooks", SCOPE, missing)
            if doc is None or not doc.get("deleted"):
                found[missing] = self.endpoints[missing]
        for gone in set(self.endpoints) - set(found):  # deleted: prune what was kept for it
            self.progress.pop(gone, None)
            self._kicks.pop(gone, None)
            self._again.discard(gone)
            pruned = {"gone": True, **dict.fromkeys(PROGRESS_FIELDS)}
            self._states[gone] = Op(STATE, SCOPE, gone, self._next_rev(), set=pruned)
            self._unwritten.set()
            task = self._tasks.pop(gone, None)
            if task is not None:
                task.cancel()
        for key, doc in found.items():  # changed (re-enabled, new URL, replay): look again now
            old = self.endpoints.get(key)
            kick = self._kicks.get(key)
            if old is not None and kick is not None and old.get("version") != doc.get("version"):
                kick.set()
        self.endpoints = found
        self._by_tenant = {}
        for key, doc in found.items():
            self._by_tenant.setdefault(doc["tenant"], []).append(key)

    def _ensure_task(self, key: str) -> None:
        existing = self._tasks.get(key)
        if existing is not None and not existing.done():
            return
        task = asyncio.create_task(self._endpoint(key), name=f"caas-webhook-{key}")
        self._tasks[key] = task
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._tasks.items()):
            if running is task:
                del self._tasks[key]
                self._kicks.pop(key, None)
                self._again.discard(key)

    # one endpoint --------------------------------------------------------------------------
    async def _endpoint(self, key: str) -> None:
        """Deliver the endpoint's backlog, then end (a new event or the poll starts it again)."""
        delay = 0.5
        while True:
            try:
                if not await self._step(key):
                    if key not in self._again:
                        return
                    self._again.discard(key)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # store or log unavailable: log, back off, go on
                log.warning("webhook_delivery_failed", endpoint=key, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _progress(self, key: str, doc: Doc) -> Progress:
        found = self.progress.get(key)
        if found is None:
            stored = await self.store.get(STATE, SCOPE, key)
            if stored is not None and not stored.get("gone"):
                found = Progress(**{k: stored[k] for k in PROGRESS_FIELDS if k in stored})
            else:
                # a replay already asked counts as not done: _step moves the cursor back to it
                found = Progress(cursor=int(doc["start_position"]))
            self.progress[key] = found
        return found

    async def _step(self, key: str) -> bool:
        """One round for an endpoint; ``False`` when it has nothing more to do now."""
        doc = self.endpoints.get(key)
        if doc is None or not doc["enabled"]:
            return False
        progress = await self._progress(key, doc)
        config = int(doc.get("config_version", 0))
        if config != progress.config_version:  # re-enabled or changed: the backoff starts afresh
            progress.config_version, progress.attempt, progress.failing_since, progress.next_at = config, 0, None, 0.0
            await self._save(key, progress)
        replay = int(doc.get("replay_seq", 0))
        if replay > progress.replay_seq:
            # back to an earlier point only (never past what was delivered), the backoff kept
            progress.cursor = min(progress.cursor, int(doc["replay_from"]))
            progress.replay_seq = replay
            await self._save(key, progress)
        wait = progress.next_at - self.clock()
        if wait > 0:  # the backoff: until it ends, or the endpoint changes
            kick = self._kicks.setdefault(key, asyncio.Event())
            kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), wait)
            return True
        horizon = await self.horizon()
        if progress.cursor >= horizon:
            return False
        if not subscribed(list(doc["event_types"])):
            return False
        # One read of every event of the tenant after the cursor (types filtered here): the
        # cursor then moves over what this one read returned, never further. A read that finds
        # nothing moves nothing, so an event index briefly empty (a live rebuild swapping its
        # collection) cannot move the cursor past events never sent, and each round reads only
        # what is new since the last one.
        read = await self.history.read_tenant(doc["tenant"], after_position=progress.cursor, limit=self.policy.batch)
        events = [event for event in read if event.position <= horizon]
        complete = len(read) < self.policy.batch or len(events) < len(read)
        for event in events:
            current = self.endpoints.get(key)
            if current is None or not current["enabled"] or current.get("replay_seq", 0) > progress.replay_seq:
                return True  # changed meanwhile: start the round again
            if event.type not in subscribed(list(current["event_types"])):
                continue  # not subscribed (the types as they are now, if changed mid-batch)
            if not await self._deliver(key, current, event, progress):
                return True
        if events and progress.cursor < events[-1].position:
            progress.cursor = events[-1].position  # every event up to it was read, and sent if subscribed
            await self._save(key, progress)
        return not complete

    async def _deliver(self, key: str, doc: Doc, event: Event, progress: Progress) -> bool:
        endpoint_id = doc["endpoint_id"]
        body = payload(event, endpoint_id)
        timestamp = int(self.clock())
        headers = {
            "content-type": "application/json",
            "user-agent": "CAAS-Webhooks/1",
            SIGNATURE_HEADER: self._signature(doc, timestamp, body),
            "CAAS-Event-Id": event.event_id,
            "CAAS-Event-Type": event.type,
            "CAAS-Delivery-Attempt": str(progress.attempt + 1),
        }
        async with self._slots.slot(doc["tenant"]):
            attempt = await self.sender.send(doc["url"], body, headers)
        now = self.clock()
        number = progress.attempt + 1
        if attempt.ok:
            progress.cursor, progress.attempt, progress.failing_since, progress.next_at = event.position, 0, None, 0.0
            self.delivered += 1
        else:
            progress.attempt = number
            progress.failing_since = progress.failing_since or now
            progress.next_at = now + self.policy.backoff(number)
        await self._save(key, progress, self._record(doc, event, number, attempt, now, progress))
        failing = progress.failing_since
        if not attempt.ok and failing is not None and now - failing >= self.policy.disable_after:
            await self._disable(doc, progress)
        return attempt.ok

    def _signature(self, doc: Doc, timestamp: int, body: bytes) -> str:
        """Signed with the endpoint's secret, and with the one before it during the grace
        period after a rotation (receivers accept either ``v1``)."""
        tenant, endpoint_id = doc["tenant"], doc["endpoint_id"]
        current = endpoint_secret(self.server_key, tenant, endpoint_id, int(doc.get("secret_generation") or 0))
        rotated = doc.get("secret_rotated_at")
        if rotated is None or self.clock() - datetime.fromisoformat(rotated).timestamp() > self.policy.secret_grace:
            return sign(current, timestamp, body)
        previous = endpoint_secret(self.server_key, tenant, endpoint_id, int(doc.get("previous_generation") or 0))
        return sign(current, timestamp, body, previous)

    def _record(self, doc: Doc, event: Event, number: int, attempt: Attempt, now: float, progress: Progress) -> Op:
        """The attempt's delivery log entry: the endpoint's log is a ring of ``log_kept``
        documents, the oldest overwritten (the store keeps a bounded log per endpoint)."""
        rev = self._next_rev()
        endpoint_id = doc["endpoint_id"]
        slot = progress.logged % self.policy.log_kept
        progress.logged += 1
        return Op(
            DELIVERIES,
            doc["tenant"],
            f"{endpoint_id}/{slot}",
            rev,
            set={
                "webhook_id": endpoint_id,
                "delivery_id": f"{rev:020d}",
                "event_id": event.event_id,
                "event_type": event.type,
                "position": event.position,
                "attempt": number,
                "status_code": attempt.status,
                "ok": attempt.ok,
                "latency_ms": round(attempt.latency_ms, 1),
                "error": attempt.error,
                "at": format_time(datetime.fromtimestamp(now, UTC)),
            },
        )

    async def _disable(self, doc: Doc, progress: Progress) -> None:
        since = progress.failing_since or self.clock()
        command = DisableWebhook(
            reason=f"every delivery failed for {int(self.clock() - since)} s",
            seen_version=int(doc["version"]),
            failing_since=format_time(datetime.fromtimestamp(since, UTC)),
        )
        await self.commands.execute(
            CommandEnvelope(doc["tenant"], stream_name("webhook", doc["endpoint_id"]), command, actor="system:webhooks")
        )
        log.warning("webhook_disabled", tenant_id=doc["tenant"], webhook_id=doc["endpoint_id"])

    async def _save(self, key: str, progress: Progress, *extra: Op) -> None:
        """Queue the endpoint's progress (and delivery log entries) for the writer, which writes
        what accumulated in one batch: one store write per batch, not per delivery. What a
        crash loses is sent again (at least once); a full queue waits for the writer."""
        rev = self._next_rev()
        self._states[key] = Op(STATE, SCOPE, key, rev, set=progress.as_doc())
        self._records.extend(extra)
        self._unwritten.set()
        while len(self._records) >= MAX_UNWRITTEN:
            self._written.clear()
            await self._written.wait()

    async def _write_loop(self) -> None:
        delay = 0.1
        while True:
            await self._unwritten.wait()
            try:
                await self._write()
                delay = 0.1
            except Exception as exc:  # the store is away: keep what is queued, say so, back off
                log.warning("webhook_progress_not_written", error=str(exc) or type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _write(self) -> None:
        self._unwritten.clear()
        states, records = self._states, self._records
        self._states, self._records = {}, []
        if not (states or records):
            return
        try:
            rev = self._next_rev()
            await self.store.apply(WRITES, [*records, *states.values()], rev)
        except BaseException:
            self._records[:0] = records  # back in front, in order; newer states win
            self._states = {**states, **self._states}
            self._unwritten.set()
            raise
        finally:
            self._written.set()

    def _next_rev(self) -> int:
        """An increasing guard for the processor's own documents (they have no log position):
        the clock in nanoseconds, but never below the last one used here or stored (start)."""
        self._rev = max(int(self.clock() * 1_000_000_000), self._rev + 1)
        return self._rev


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("webhook_dispatcher_stopped", error=repr(task.exception()))
