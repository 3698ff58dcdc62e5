"""The tenant analytics projection: who was active, what was posted where, and when, per UTC
hour and day, derived from the log alone (docs/analytics.md has the definitions).

Documents (all scoped by ``tenant_id``):

- ``analytics_users/<YYYY-MM-DD>/<user_id>``: the user was active that day (``day``, ``user_id``).
- ``analytics_monthly/<YYYY-MM>/<user_id>``: the user was active that month (``month``, ``user_id``).
- ``analytics_channels/<channel_id>/<YYYY-MM-DD>``: a channel's day with at least one post:
  ``messages`` and ``replies`` (top-level and thread posts, ``inc``), and for each hour ``HH``
  of the day with a post, ``start.HH`` (its first post, ``<time>|<author>``, ``min``: times
  are of one width, so the least string is the earliest post), ``last.HH`` (its last post time,
  ``max``) and ``first.HH:<author>`` (each author's first post time in the hour, ``min``; the
  author escaped by :func:`author_key`). The median time to first reply is worked out from these at query time
  (:mod:`projections.analytics.queries`): a conversation can only start with the first post of
  an hour, because it needs an hour of silence before it. A document per channel-day rather than
  per channel-hour: a quarter's report reads 24 times fewer rows (tests/perf/bench_analytics.py).

**Why no shards** (the usage model keys documents fed by many streams by the partition they come
from): a channel's days are written by that channel's stream alone, in its order; a user's day
and month documents only ever receive the same ``insert``, so which of two racing sources wins
the position guard changes nothing. Each event yields at most one op per document.

Active means: wrote to a channel in their own name — posted, edited or deleted a message,
reacted, moved a read marker, or any other channel command under their own token (the rule of
usage's MAU, :func:`projections.usage.projection.writer`, without the sockets usage also counts).
"""

from __future__ import annotations

from domain.events import Event
from projections.ports import Op
from projections.usage.projection import writer

NAME = "analytics"
COLLECTIONS = ("analytics_users", "analytics_monthly", "analytics_channels")


def author_key(user_id: str) -> str:
    """A user id as a key of ``by``: ids may hold ``.``, which a store reads as a path."""
    return user_id.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def author_of(key: str) -> str:
    """The user id :func:`author_key` escaped."""
    return key.replace("%2E", ".").replace("%24", "$").replace("%25", "%")


def project(event: Event) -> list[Op]:
    """The analytics writes one event causes (none for events of other streams)."""
    if event.stream_type != "channel":
        return []
    at, tenant, position = event.occurred_at, event.tenant_id, event.position
    ops: list[Op] = []
    if event.type == "MessagePosted":
        p = event.payload
        day, hh, author = at[:10], at[11:13], author_key(str(p["author_id"]))
        ops.append(
            Op(
                "analytics_channels",
                tenant,
                f"{event.stream_id}/{day}",
                position,
                inc={"replies" if p.get("parent_id") else "messages": 1},
                min={f"first.{hh}:{author}": at, f"start.{hh}": f"{at}|{author}"},
                max={f"last.{hh}": at},
                insert={"channel_id": event.stream_id, "day": day},
            )
        )
    who = writer(event)
    if who is not None:
        day, month = at[:10], at[:7]
        ops.append(Op("analytics_users", tenant, f"{day}/{who}", position, insert={"day": day, "user_id": who}))
        ops.append(Op("analytics_monthly", tenant, f"{month}/{who}", position, insert={"month": month, "user_id": who}))
    return ops
