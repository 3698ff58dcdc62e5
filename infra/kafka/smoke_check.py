"""Smoke-check the test Kafka broker with aiokafka: admin, produce, consume, commit, transactions.

Usage:  python infra/kafka/smoke_check.py [127.0.0.1:PORT]   (defaults to $CAAS_KAFKA_BOOTSTRAP)
Exits non-zero on the first failure. Topic names are unique per run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition


async def main(boot: str) -> None:
    run = uuid.uuid4().hex[:8]
    t0 = time.monotonic()

    def step(msg: str) -> None:
        print(f"OK   {msg}  ({time.monotonic() - t0:.2f}s)")

    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    topic = f"smoke-{run}"
    await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    assert topic in await admin.list_topics()
    step(f"admin: create_topics({topic}, 3 partitions) + list_topics")

    p = AIOKafkaProducer(bootstrap_servers=boot, acks="all", enable_idempotence=True)
    await p.start()
    for i in range(30):
        await p.send(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
    await p.flush()
    md = await p.send_and_wait(f"auto-{run}", b"x")  # auto.create.topics.enable
    await p.stop()
    step(f"idempotent producer: 30 keyed messages + auto-created topic (offset {md.offset})")

    c = AIOKafkaConsumer(topic, bootstrap_servers=boot, group_id=f"g-{run}", auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    got = []
    while len(got) < 30:
        batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 30)
        for msgs in batch.values():
            got.extend(msgs)
    await c.commit()
    tps = c.assignment()
    committed = {tp.partition: await c.committed(tp) for tp in tps}
    await c.stop()
    assert sum(committed.values()) == 30, committed
    step(f"consumer group: consumed 30, committed offsets {committed}")

    tp_topic = f"txn-{run}"
    tp = AIOKafkaProducer(bootstrap_servers=boot, transactional_id=f"tx-{run}")
    await tp.start()
    async with tp.transaction():
        await tp.send(tp_topic, b"committed")
    await tp.begin_transaction()
    await tp.send(tp_topic, b"aborted")
    await tp.abort_transaction()
    await tp.stop()
    rc = AIOKafkaConsumer(bootstrap_servers=boot, isolation_level="read_committed", auto_offset_reset="earliest")
    await rc.start()
    part = TopicPartition(tp_topic, 0)
    rc.assign([part])
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = await rc.getmany(timeout_ms=500)
        seen += [m.value for msgs in batch.values() for m in msgs]
        if seen and await rc.position(part) >= (await rc.end_offsets([part]))[part]:
            break
    await rc.stop()
    assert seen == [b"committed"], seen
    step("transactions: commit visible, abort invisible (read_committed)")

    await admin.delete_topics([topic, tp_topic, f"auto-{run}"])
    await admin.close()
    step("admin: delete_topics")


if __name__ == "__main__":
    boot = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CAAS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    asyncio.run(main(boot))
