"""The consume loop against the real broker: delivery, dead letters, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from novalog.consume import DLQ_HEADER, Batch, ConsumeLoop, Record, TransientError
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import EventProducer, Topics, client_config, consumer_config, ensure_topics
from novalog.migrations import migrate
from novalog.settings import Settings
from schemas import Event, encode

pytestmark = pytest.mark.integration


GARBAGE = b"garbage, not an Avro event"


def text_headers(msg: Message) -> dict[str, str]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}


def heartbeat(host: str, n: int = 0) -> Event:
    return Event("ServiceHeartbeat", host, {"host": host, "binary": f"nova-compute-{n}"},
                 f"req-{uuid.uuid4()}", "test@pytest")


def run_until(loop: ConsumeLoop, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the consume loop"
        loop.poll_once()


def read_all(settings: Settings, topic: str, expect: int, timeout: float = 15) -> list[Message]:
    """Every record of `topic` via assign() (no group join), oldest first per partition."""
    consumer = Consumer({**client_config(settings), "group.id": "reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(msg)
    finally:
        consumer.close()
    return records


def committed_total(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer(consumer_config(settings, group))
    try:
        offsets = consumer.committed([TopicPartition(topic, p)
                                      for p in range(settings.partitions)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def test_produce_consume_round_trip_commits_what_it_handled(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).hosts
    sent = [heartbeat(f"cmp{i % 3}", i) for i in range(9)]
    producer = EventProducer(settings)
    for event in sent:
        producer.publish(topic, event)
    producer.flush()
    got: list[Event] = []
    loop = ConsumeLoop(settings, group_id="rt", topics=[topic],
                       handler=lambda e, _r: got.append(e), producer=producer)
    try:
        run_until(loop, lambda: len(got) == len(sent))
    finally:
        loop.close()
    assert sorted(got, key=lambda e: e.event_id) == sorted(sent, key=lambda e: e.event_id)
    for host in ("cmp0", "cmp1", "cmp2"):  # one aggregate, one partition, in order
        assert [e for e in got if e.aggregate_id == host] == \
            [e for e in sent if e.aggregate_id == host]
    assert committed_total(settings, "rt", topic) == len(sent)


def test_poison_records_are_dead_lettered_and_the_next_record_is_processed(
        settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    producer = EventProducer(settings)
    key = b"cmp1"  # everything on one partition, so order is observable
    good1, good2, flaky = heartbeat("cmp1", 1), heartbeat("cmp1", 2), heartbeat("cmp1", 3)
    broken, stuck = heartbeat("cmp1", 4), heartbeat("cmp1", 5)
    unknown_fp = b"\xc3\x01" + b"\x00" * 8 + encode(good1)[10:]
    sequence = [encode(good1), GARBAGE, unknown_fp, encode(broken), encode(stuck),
                encode(flaky), encode(good2)]
    for value in sequence:
        producer.produce(topics.hosts, key, value)
    producer.flush()

    handled: list[str] = []
    calls: dict[str, int] = {}

    def handler(event: Event, _record: Record) -> None:
        calls[event.event_id] = calls.get(event.event_id, 0) + 1
        if event.event_id == broken.event_id:
            raise ValueError("no such host")
        if event.event_id == stuck.event_id:
            raise TransientError("peer away")
        if event.event_id == flaky.event_id and calls[event.event_id] == 1:
            raise TransientError("blip")
        handled.append(event.event_id)

    loop = ConsumeLoop(settings, group_id="poison", topics=[topics.hosts], handler=handler,
                       producer=producer)
    try:
        run_until(loop, lambda: good2.event_id in handled)
    finally:
        loop.close()
    assert handled == [good1.event_id, flaky.event_id, good2.event_id]
    assert calls[broken.event_id] == 1  # not transient: no retry
    assert calls[stuck.event_id] == settings.max_retries + 1
    assert committed_total(settings, "poison", topics.hosts) == len(sequence)

    dead = read_all(settings, topics.dead_letters, expect=4)
    assert [m.value() for m in dead] == [GARBAGE, unknown_fp, encode(broken), encode(stuck)]
    headers = [text_headers(m) for m in dead]
    assert all(h[DLQ_HEADER + "topic"] == topics.hosts for h in headers)
    assert [int(h[DLQ_HEADER + "offset"]) for h in headers] == [1, 2, 3, 4]
    assert all(h[DLQ_HEADER + "consumer"] == "poison" for h in headers)
    errors = [h[DLQ_HEADER + "error"] for h in headers]
    assert errors[0].startswith("undecodable: not Avro single-object encoding")
    assert errors[1].startswith("undecodable: unknown schema fingerprint")
    assert errors[2] == "handler failed: ValueError: no such host"
    assert errors[3].startswith(f"gave up after {settings.max_retries + 1} attempts")
    assert all(m.key() == key for m in dead)


def test_a_cleanly_stopped_consumer_resumes_after_its_last_commit(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).hosts
    producer = EventProducer(settings)
    first = [heartbeat(f"h{i}") for i in range(6)]
    for event in first:
        producer.publish(topic, event)
    producer.flush()
    got: list[str] = []
    loop = ConsumeLoop(settings, group_id="resume", topics=[topic],
                       handler=lambda e, _r: got.append(e.event_id), producer=producer)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while len(got) < len(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(15)
    assert not thread.is_alive()
    second = [heartbeat(f"h{i}") for i in range(6)]
    for event in second:
        producer.publish(topic, event)
    producer.flush()
    again: list[str] = []
    loop2 = ConsumeLoop(settings, group_id="resume", topics=[topic],
                        handler=lambda e, _r: again.append(e.event_id), producer=producer)
    try:
        run_until(loop2, lambda: len(again) >= len(second))
        for _ in range(5):  # anything re-delivered would show up here
            loop2.poll_once()
    finally:
        loop2.close()
    assert sorted(got) == sorted(e.event_id for e in first)
    assert sorted(again) == sorted(e.event_id for e in second)


def _start_consumer(settings: Settings, out: Path, topic: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_env()}
    script = Path(__file__).with_name("consumer_proc.py")
    return subprocess.Popen([sys.executable, str(script), str(out), "killed", topic], env=env)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_consumer_killed_mid_stream_resumes_without_loss(settings: Settings,
                                                           tmp_path: Path) -> None:
    topic = Topics(settings.topic_prefix).hosts
    producer = EventProducer(settings)
    sent = [heartbeat(f"h{i % 4}", i) for i in range(60)]
    for event in sent:
        producer.publish(topic, event)
    producer.flush()
    out = tmp_path / "handled.txt"

    proc = _start_consumer(settings, out, topic)
    try:
        deadline = time.monotonic() + 40
        while len(_lines(out)) < 15:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no clean-up, no final commit
        proc.wait(10)
        killed_after = len(_lines(out))
        assert killed_after < len(sent), "killed too late to test a resume"

        proc = _start_consumer(settings, out, topic)
        deadline = time.monotonic() + 60
        while set(_lines(out)) != {e.event_id for e in sent}:
            assert time.monotonic() < deadline, f"lost: only {len(set(_lines(out)))} handled"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(20)
    handled = _lines(out)
    # at-least-once: only records of batches not yet committed at the kill come again
    assert len(handled) - len(sent) <= 5 * settings.partitions


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_read_to_end_stops_at_the_end_and_a_dead_replica_is_noticed(settings: Settings) -> None:
    from novalog.kafka import read_to_end
    from novalog.replica import LogReplica, ReplicaDied

    topics = Topics(settings.topic_prefix)
    producer = EventProducer(settings)
    sent = [heartbeat(f"cmp{i}", i) for i in range(25)]
    for event in sent:
        producer.publish(topics.hosts, event)
    producer.flush()
    read = [m.value() or b"" for m in read_to_end(settings, [topics.hosts])]
    assert sorted(read) == sorted(encode(e) for e in sent)  # all of them, and it ended
    seen: list[str] = []
    replica = LogReplica(settings, [topics.hosts], lambda e: seen.append(e.event_id),
                         "test").start()
    try:
        assert replica.wait_caught_up(30)
        with replica.lock:
            assert sorted(seen) == sorted(e.event_id for e in sent)
        replica.check()  # alive: nothing raised
    finally:
        replica.stop()
    replica.check()  # stopped on purpose: not a failure
    broken = LogReplica(settings, [f"{settings.topic_prefix}.no-such-topic"],
                        lambda _e: None, "broken").start()
    deadline = time.monotonic() + 30
    while broken.thread.alive():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(ReplicaDied, match="replica-broken stopped reading"):
        broken.check()


def test_lanes_handle_topics_at_once_each_in_order_and_inboxes_keep_their_names(
        settings: Settings) -> None:
    """A compute fleet's loop: one lane per topic, in parallel, each in log order; every
    topic's inbox under its own consumer name, so a second loop with another layout (one
    topic alone, another group) skips what the first handled."""
    topics = [Topics(settings.topic_prefix).compute(h) for h in ("fa", "fb")]
    ensure_topics(settings, topics)
    producer = EventProducer(settings)
    sent = {t: [heartbeat(f"{t[-2:]}-{i}") for i in range(6)] for t in topics}
    for topic, events in sent.items():
        for event in events:  # one key per topic: one partition, an observable order
            producer.produce(topic, topic.encode(), encode(event))
    producer.flush()
    got: dict[str, list[str]] = {t: [] for t in topics}
    active: set[str] = set()
    overlapped: list[bool] = []
    lock = threading.Lock()

    def handler(event: Event, record: Record) -> None:
        with lock:
            active.add(record.topic)
            overlapped.append(len(active) > 1)
        time.sleep(0.03)  # a host's wait on libvirt or Postgres
        with lock:
            active.discard(record.topic)
            got[record.topic].append(event.event_id)

    pool = make_pool(settings)
    migrate(settings)
    names = {t: f"compute-{t[-2:]}" for t in topics}
    loop = ConsumeLoop(settings, group_id="fleet-ab", topics=topics, handler=handler,
                       producer=producer, inbox=Inbox(pool, "fleet-ab", names), lanes=2)
    try:
        run_until(loop, lambda: sum(map(len, got.values())) == 12)
        assert got == {t: [e.event_id for e in events] for t, events in sent.items()}
        # one batch holding both topics (a poll may bring them apart): handled at once
        both = Batch(events=[(Record(t, 0, i, t.encode(), b"", []), heartbeat(f"x{i}"))
                             for i in range(2) for t in topics])
        overlapped.clear()
        loop._each(both, None)
        assert any(overlapped)
    finally:
        loop.close()
    with pool.connection() as conn:
        rows = conn.execute("SELECT consumer, count(*) FROM inbox WHERE consumer = ANY(%s) "
                            "GROUP BY consumer", (list(names.values()),)).fetchall()
    assert dict(rows) == {name: 6 for name in names.values()}
    again: list[str] = []
    alone = ConsumeLoop(settings, group_id=names[topics[0]], topics=[topics[0]],
                        handler=lambda e, _r: again.append(e.event_id), producer=producer,
                        inbox=Inbox(pool, names[topics[0]]))
    try:
        run_until(alone, lambda: committed_total(settings, names[topics[0]], topics[0]) == 6)
    finally:
        alone.close()
        pool.close()
    assert again == []  # all six were handled by the fleet already
