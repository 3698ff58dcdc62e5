"""Erasure on the Kafka backend, end to end through a real cluster, ``caas replay`` and ``caas
rebuild``; and the server-blind scan of every topic of the cluster (raw records, read with
aiokafka) and every MongoDB collection of its database (docs/erasure.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import Cluster
from tests.erasure_scenario import (
    check_channel_hold_refuses_erasure,
    check_events,
    check_reads,
    collections,
    erase_and_check,
    fill,
    found_in,
    ok,
    topic_records,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster", env={"CAAS_METERING": "off"})
    try:
        yield cluster.start(workers=1, nodes=1)
    finally:
        cluster.stop()


def caas(cluster: Cluster, tmp_path: Path, *args: str) -> str:
    env = {**os.environ, **cluster.settings(), "CAAS_DATA_DIR": str(tmp_path / "cli")}
    done = subprocess.run([sys.executable, "-m", "api.cli", *args, "--backend", "kafka"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_an_erased_user_reads_as_erased_everywhere_and_is_nowhere_in_clear(cluster: Cluster, tmp_path: Path) -> None:
    settings = cluster.settings()
    bootstrap, url, database = (
        settings["CAAS_KAFKA_BOOTSTRAP"],
        settings["CAAS_MONGO_URL"],
        settings["CAAS_MONGO_DATABASE"],
    )
    node = cluster.nodes[0]
    with httpx.Client(timeout=30) as client:
        chat = fill(client, node.url)
        last = {"min_position": chat.acks[-1]["position"]}
        ok(client.get(f"{node.url}/v1/channels/general/messages", params=last, headers=chat.tenant.headers()))
        # before erasure: no topic, no event index, no key holds a personal field in clear; the read models do
        in_topics = found_in(asyncio.run(topic_records(bootstrap, cluster.name)), chat.secrets)
        assert not in_topics, in_topics
        in_mongo = found_in(collections(url, database), chat.secrets)
        assert in_mongo and {where for where, _ in in_mongo} <= {"users", "messages"}, in_mongo

        erase_and_check(client, node.ws_url, chat)
    assert not found_in(asyncio.run(topic_records(bootstrap, cluster.name)), chat.secrets)
    assert not found_in(collections(url, database), chat.secrets)
    assert found_in(collections(url, database), [chat.bob[1].encode()]), "the scan finds what it looks for"

    cluster.stop()
    replay = [
        json.loads(line) for line in caas(cluster, tmp_path, "replay", "--tenant", chat.tenant.tenant_id).splitlines()
    ]
    check_events(replay, chat)
    out = tmp_path / "export"
    caas(cluster, tmp_path, "export", "--format", "jsonl", "--output", str(out), "--tenant", chat.tenant.tenant_id)
    check_events([json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()], chat)
    caas(cluster, tmp_path, "rebuild")
    assert not found_in(collections(url, database), chat.secrets)
    cluster.start(workers=1, nodes=1)
    chat.url = cluster.nodes[-1].url
    with httpx.Client(timeout=30) as client:
        check_reads(client, chat)


def test_a_legal_hold_on_a_channel_refuses_erasing_its_members_and_former_members(cluster: Cluster) -> None:
    with httpx.Client(timeout=30) as client:
        check_channel_hold_refuses_erasure(client, cluster.nodes[0].url)
