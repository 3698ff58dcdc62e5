"""CAAS's Python client: HTTP (:class:`AsyncClient`, :class:`Client`), gapless resumable
channels over the websocket (:class:`Realtime`), and a retrying :class:`Outbox`."""

from caas_client import models
from caas_client.backoff import Backoff
from caas_client.calls import Call
from caas_client.client import AsyncClient, Client
from caas_client.delivery import Outbox, SyncOutbox
from caas_client.errors import (
    CaasError,
    ConnectionLost,
    FrameTooBig,
    FrameUnreadable,
    SocketRefused,
    SubscriptionRefused,
)
from caas_client.frames import ChannelEvent, CompactEvent, ErrorFrame, EventFrame, Presence, Subscribed, Typing
from caas_client.outbox import Ack, MemoryStore, OutboxState, OutboxStore, Pending, SqliteStore
from caas_client.realtime import Channel, Realtime, Step, next_step
from caas_client.timeline import Timeline, Verdict

__all__ = [
    "Ack",
    "AsyncClient",
    "Backoff",
    "CaasError",
    "Call",
    "Channel",
    "ChannelEvent",
    "Client",
    "CompactEvent",
    "ConnectionLost",
    "ErrorFrame",
    "EventFrame",
    "FrameTooBig",
    "FrameUnreadable",
    "MemoryStore",
    "Outbox",
    "OutboxState",
    "OutboxStore",
    "Pending",
    "Presence",
    "Realtime",
    "SocketRefused",
    "SqliteStore",
    "Step",
    "Subscribed",
    "SubscriptionRefused",
    "SyncOutbox",
    "Timeline",
    "Typing",
    "Verdict",
    "models",
    "next_step",
]  # fmt: skip
