"""Creating CAAS's topics (idempotent) on a Kafka cluster."""

from __future__ import annotations

import contextlib

# aiokafka ships no type information
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def topic_names(prefix: str) -> dict[str, str]:
    return {kind: f"{prefix}{kind}" for kind in ("commands", "events", "replies", "ephemeral")}


async def create_topic(bootstrap: str, name: str, partitions: int, replication: int = 1) -> None:
    """Create one topic with infinite retention if it is missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, replication, topic_configs={"retention.ms": "-1"})]
                )
    finally:
        await admin.close()


async def ensure_topics(bootstrap: str, prefix: str, partitions: int, replication: int = 1) -> dict[str, str]:
    """Create the command, event, reply and ephemeral topics if they are missing."""
    names = topic_names(prefix)
    forever = {"retention.ms": "-1", "retention.bytes": "-1", "min.insync.replicas": "1"}
    short = {"retention.ms": "60000", "segment.ms": "60000"}
    wanted = [
        NewTopic(names["commands"], partitions, replication, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000)}),
        NewTopic(names["events"], partitions, replication, topic_configs=forever),
        NewTopic(names["replies"], partitions, replication, topic_configs=short),
        NewTopic(names["ephemeral"], partitions, replication, topic_configs=short),
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
    return names
