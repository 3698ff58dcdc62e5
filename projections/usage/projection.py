"""The usage projection: what each tenant used, hour by hour, derived from the log alone.

Meters (:data:`METERS`) and where they come from:

- ``messages``, ``replies``, ``edits``: ``MessagePosted`` (top-level / with a ``parent_id``) and
  ``MessageEdited`` events of the tenant's channels.
- ``deliveries``, ``api_reads``, ``api_writes``, ``connection_minutes``, ``peak_connections``:
  counted by each API node in memory and recorded as one ``UsageRecorded`` event per tenant and
  interval on the stream ``usage:<node_id>`` (``streams/metering.py``).
- ``mau``: users who wrote (posted, edited, deleted, reacted, moved a read marker, or any
  channel command under their own token) or connected (``UsageRecorded.users``) in a calendar
  month (UTC). A bucket holds the users whose *first* activity of their month falls in it, so
  the buckets of a whole month sum to that month's MAU.
- ``stored_bytes``: UTF-8 bytes of the text plus the JSON of the attachments of live messages,
  as a running counter: each post, edit and delete moves it by the change it made to its
  message's size, in the hour it happened. The queries read the total and the hours' changes
  after a moment, never the messages.

Documents (all scoped by ``tenant_id``), one per UTC day where time matters, so a year is 365
documents per shard however it is read (a report by month reads the same days a report by hour
does, and a quota check of the month so far reads at most 31):

- ``usage/<YYYY-MM-DD>/<shard>``: the day's counters, each a map from the hour (``HH``) to its
  count (``messages.07``, ``inc``).
- ``usage_samples/<YYYY-MM-DD>/<shard>``: the day's socket samples (``s<SSSSS>``, ``inc``: the
  sockets the nodes of this shard held open at the second ``SSSSS`` of the day, one of the
  instants every node samples at; see ``docs/meters.md``).
- ``usage_peaks/<YYYY-MM-DD>/<shard>``: ``peak.<HH>``, the most sockets at one sample instant of
  the hour in this shard, raised by each sample as it is added (a ``high`` :class:`Tally`), so
  readers leave the samples in the store unless two shards' sockets must be summed.
- ``usage_users/<YYYY-MM>/<user_id>/<shard>``: a user active in a month; ``first_hour`` (``min``).
- ``usage_messages/<channel_id>/<message_id>``: a message's created hour, sizes and deletion
  time: what the change of an edit or a delete is measured against (a deleted message: 0).
- ``usage_stored/<YYYY-MM-DD>/<shard>``: the change of the stored bytes in each hour of the day
  (``bytes.<HH>``).
- ``usage_bytes/<shard>``: the stored bytes now (``bytes``), the sum of every hour's change.

**Why shards.** Ops are guarded per document by the event's position, which is one order on
the embedded log but is ordered only within a partition on Kafka. A document fed by many
streams (an hour's counters, a user's month) is therefore keyed by the shard of its source —
the partition on Kafka, ``0`` on a log with one order — so each document only ever sees one
ordered source; readers sum (or take the minimum) over shards. A day's ``peak`` is its shard's:
when two shards of a day have sockets in the same hour, readers sum those days' samples instant
by instant (exact whatever the shards, fast when one node holds a tenant's sockets, the embedded
case and the usual one). A message's document is fed by
its channel stream alone and needs no shard; the stored-bytes counters its changes move are
keyed by the shard of that stream, so they too see one ordered source. Each event yields at most
one op per document.

The queries billing codes against are in :mod:`projections.usage.queries`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson

from domain.events import Event
from projections.ports import Op, Tally
from projections.usage.ranges import hour_key

NAME = "usage"
COLLECTIONS = ("usage", "usage_samples", "usage_peaks", "usage_users", "usage_messages", "usage_stored", "usage_bytes")
SIZES = ("text_bytes", "attachment_bytes")  # what a live message stores, in bytes

METERS: tuple[str, ...] = (
    "messages",
    "replies",
    "edits",
    "deliveries",
    "api_reads",
    "api_writes",
    "connection_minutes",
    "peak_connections",
    "mau",
    "stored_bytes",
)
COUNTERS: tuple[str, ...] = ("messages", "replies", "edits", "deliveries", "api_reads", "api_writes")


def message_meter(parent_id: str | None) -> str:
    """The meter a posted message counts in: ``replies`` in a thread, ``messages`` otherwise
    (the projection counts the event; the quota check admits the command by the same rule)."""
    return "replies" if parent_id else "messages"


Shard = Callable[[int], int]

# the user who wrote, for events a tenant key may issue on a user's behalf
_WRITER_FIELD = {
    "MessagePosted": "author_id",
    "ReactionAdded": "user_id",
    "ReactionRemoved": "user_id",
    "ReadMarkerMoved": "user_id",
}


def single_order(position: int) -> int:
    """The shard of every event on a log whose positions are one order (the embedded log)."""
    return 0


def projector(shard: Shard = single_order) -> Callable[[Event], list[Op]]:
    """The usage projection for a log whose events' sources are told apart by ``shard``
    (a function of the position: the partition on Kafka)."""

    def project(event: Event) -> list[Op]:
        return _project(event, shard(event.position))

    return project


project = projector()


# --- projection ------------------------------------------------------------------------------
def _day(event: Event, shard: int, day: str, inc: dict[str, int]) -> Op:
    """The op on the day's counters (``inc`` names ``<counter>.<HH>``)."""
    return Op("usage", event.tenant_id, f"{day}/{shard}", event.position, inc=inc, insert={"day": day, "shard": shard})


def _counter(event: Event, shard: int, hour: str, name: str) -> Op:
    return _day(event, shard, hour[:10], {f"{name}.{hour[11:13]}": 1})


def _active(event: Event, shard: int, user_id: str, hour: str) -> Op:
    month = hour[:7]
    return Op(
        "usage_users",
        event.tenant_id,
        f"{month}/{user_id}/{shard}",
        event.position,
        insert={"month": month, "user_id": user_id, "shard": shard},
        min={"first_hour": hour},
    )


def writer(event: Event) -> str | None:
    """The user a channel event was written by or for, if any: the author, reactor or reader
    it names, else the user whose token issued it (usage's MAU and the analytics' active users)."""
    name = _WRITER_FIELD.get(event.type)
    if name is not None and isinstance(event.payload.get(name), str):
        return str(event.payload[name])
    if event.actor is not None and event.actor.startswith("user:"):
        return event.actor[5:]
    return None


def attachments_size(attachments: Sequence[object]) -> int:
    """The bytes a message's attachments store: their JSON (0 for none)."""
    return len(orjson.dumps(attachments)) if attachments else 0


def text_size(text: str, e2e: object = None) -> int:
    """The bytes a message's text stores: its UTF-8, plus the JSON of its ciphertext envelope in
    an e2e channel (docs/e2e.md; there the text is empty)."""
    return len(text.encode()) + (len(orjson.dumps(e2e)) if e2e is not None else 0)


def _message(event: Event, shard: int, when: str, message_id: str, **fields: object) -> Op:
    """The message's sizes; the change it makes to them moves the tenant's stored bytes: the
    hour's change (``usage_stored/<day>/<shard>``, ``bytes.<HH>``) and the running total
    (``usage_bytes/<shard>``), without reading anything (:attr:`Op.tally`)."""
    return Op(
        "usage_messages",
        event.tenant_id,
        f"{event.stream_id}/{message_id}",
        event.position,
        set=fields,
        measure=SIZES,
        measure_unless="deleted_at",
        tally=(
            Tally(
                "usage_stored",
                f"{when[:10]}/{shard}",
                f"bytes.{when[11:13]}",
                insert={"day": when[:10], "shard": shard},
            ),
            Tally("usage_bytes", str(shard), "bytes", insert={"shard": shard}),
        ),
    )


def _project(event: Event, shard: int) -> list[Op]:
    kind = event.stream_type
    if kind == "usage":
        return _recorded(event, shard)
    if kind != "channel":
        return []
    hour, p = hour_key(event.occurred_at), event.payload
    ops: list[Op] = []
    if event.type == "MessagePosted":
        ops.append(_counter(event, shard, hour, message_meter(p.get("parent_id"))))
        ops.append(
            _message(
                event,
                shard,
                hour,
                p["message_id"],
                hour=hour,
                text_bytes=text_size(p["text"], p.get("e2e")),
                attachment_bytes=attachments_size(p.get("attachments") or []),
                deleted_at=None,
            )
        )
    elif event.type == "MessageEdited":
        ops.append(_counter(event, shard, hour, "edits"))
        ops.append(_message(event, shard, hour, p["message_id"], text_bytes=text_size(p["text"], p.get("e2e"))))
    elif event.type == "MessageDeleted":
        ops.append(_message(event, shard, hour, p["message_id"], deleted_at=event.occurred_at))
    who = writer(event)
    if who is not None:
        ops.append(_active(event, shard, who, hour))
    return ops


def sample_key(moment: str) -> str:
    """The field of a socket sample taken at ``moment`` in its day's samples document: the
    second of the day, five digits after an ``s`` (``s03730`` is 01:02:10)."""
    return f"s{int(moment[11:13]) * 3600 + int(moment[14:16]) * 60 + int(moment[17:19]):05d}"


def _sample(event: Event, shard: int, moment: str, sockets: int) -> Op:
    at, field = hour_key(moment), sample_key(moment)
    day, insert = at[:10], {"day": at[:10], "shard": shard}
    peak = Tally("usage_peaks", f"{day}/{shard}", f"peak.{at[11:13]}", insert=insert, high=True)
    return Op(
        "usage_samples", event.tenant_id, f"{day}/{shard}", event.position,
        inc={field: sockets}, insert=insert, measure=(field,), tally=(peak,),
    )  # fmt: skip


def _recorded(event: Event, shard: int) -> list[Op]:
    if event.type != "UsageRecorded":
        return []
    p = event.payload
    hour = hour_key(p["start"])
    counts = {name: int(p.get(name, 0)) for name in ("deliveries", "api_reads", "api_writes", "connection_ms")}
    inc = {f"{k}.{hour[11:13]}": v for k, v in counts.items() if v}
    ops = [_day(event, shard, hour[:10], inc)] if inc else []
    sample_at, connections = p.get("sample_at"), int(p.get("connections", 0))
    if sample_at and connections:  # the node's open sockets at an instant of the shared grid
        ops.append(_sample(event, shard, sample_at, connections))
    return [*ops, *(_active(event, shard, user, hour) for user in dict.fromkeys(p.get("users") or []))]
