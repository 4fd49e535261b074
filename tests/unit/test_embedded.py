"""Pure parts of the embedded broker's set-up: versions, ids, configuration, choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from novalog.embedded import kafka_node
from novalog.settings import Settings, SettingsError


@pytest.mark.parametrize(("text", "major"), [
    ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
    ('openjdk version "21" 2023-09-19', 21),
    ('java version "1.8.0_292"', 8),
    ('openjdk version "11.0.20" 2023-07-18', 11),
    ("Error: could not find libjava.so", None),
])
def test_java_major_versions(text: str, major: int | None) -> None:
    assert kafka_node.parse_java_major(text) == major


def test_maven_error_is_the_first_error_line_without_colours() -> None:
    out = ("[INFO] Scanning\n\x1b[1;31m[ERROR]\x1b[m Failed to execute goal on project x: "
           "Could not resolve dependencies\n[ERROR] \n[ERROR] second\n")
    assert kafka_node.maven_error(out) == \
        "Failed to execute goal on project x: Could not resolve dependencies"
    assert kafka_node.maven_error("") == "no output"


@settings(max_examples=300)
@given(st.integers())
def test_cluster_ids_are_22_url_safe_characters_never_an_option(_: int) -> None:
    cid = kafka_node.new_cluster_id()
    assert len(cid) == 22 and not cid.startswith("-")
    assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_one_node_and_a_cluster_are_configured_for_what_they_can_hold(tmp_path: Path) -> None:
    one = kafka_node.single_node(Settings(home=tmp_path, broker_port=1111, controller_port=1112))
    props = one.properties()
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1112"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1111,CONTROLLER://127.0.0.1:1112"
    assert (props["offsets.topic.replication.factor"], props["min.insync.replicas"]) == ("1", "1")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert props["auto.create.topics.enable"] == "false"
    three = kafka_node.cluster_nodes(tmp_path, [(1, 2), (3, 4), (5, 6)])
    assert [n.node_id for n in three] == [1, 2, 3]
    assert {n.properties()["controller.quorum.voters"] for n in three} == \
        {"1@127.0.0.1:2,2@127.0.0.1:4,3@127.0.0.1:6"}
    p = three[1].properties()
    assert (p["default.replication.factor"], p["min.insync.replicas"],
            p["transaction.state.log.min.isr"]) == ("3", "2", "2")
    behind = kafka_node.KafkaNode(1, 10, 11, tmp_path, "1@127.0.0.1:11", advertised_port=99)
    assert behind.properties()["advertised.listeners"] == "PLAINTEXT://127.0.0.1:99"


def test_the_broker_setting_is_kafka_or_tansu() -> None:
    assert Settings.from_env({}).broker is None
    assert Settings.from_env({"NOVALOG_BROKER": "tansu"}).trusts_watermarks is False
    assert Settings.from_env({"NOVALOG_BROKER": "kafka"}).trusts_watermarks is True
    assert Settings.from_env({}).trusts_watermarks is True  # an external broker is a Kafka
    with pytest.raises(SettingsError, match="NOVALOG_BROKER='redpanda': use kafka or tansu"):
        Settings.from_env({"NOVALOG_BROKER": "redpanda"})
    env = Settings(broker="tansu").as_env()
    assert env["NOVALOG_BROKER"] == "tansu"
    with pytest.raises(SettingsError, match=r"NOVALOG_CONTROLLER_PORT=0 is outside 1\.\.65535"):
        Settings.from_env({"NOVALOG_CONTROLLER_PORT": "0"})
    with pytest.raises(SettingsError, match="NOVALOG_BROKER_HEAP_MB=64 is outside"):
        Settings.from_env({"NOVALOG_BROKER_HEAP_MB": "64"})


def test_a_cluster_id_file_is_kept_and_another_clusters_data_refused(tmp_path: Path) -> None:
    from novalog.process import StackError

    node = kafka_node.single_node(Settings(home=tmp_path))
    id_file = tmp_path / "cluster.id"
    first = kafka_node.cluster_id(id_file, [node])
    assert kafka_node.cluster_id(id_file, [node]) == first  # kept
    (node.data_dir / "data").mkdir(parents=True)
    (node.data_dir / "data" / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=1\n")
    with pytest.raises(StackError, match="holds Kafka cluster AAAAAAAAAAAAAAAAAAAAAA"):
        kafka_node.cluster_id(id_file, [node])
    id_file.unlink()  # a home that lost its id file adopts what its data says
    assert kafka_node.cluster_id(id_file, [node]) == "AAAAAAAAAAAAAAAAAAAAAA"


def test_cli_verbs_learn_the_broker_kind_of_the_running_stack(tmp_path: Path) -> None:
    """`novalog up` may have fallen back to Tansu by itself: the verbs must know, or they
    would trust Tansu's watermarks."""
    import json

    from novalog.running import with_running_stack

    (tmp_path / "stack.json").write_text(json.dumps({
        "supervisor_pid": 1, "kafka_bootstrap_servers": "127.0.0.1:1",
        "database_url": "postgresql://x@127.0.0.1:2/db", "broker": "tansu"}))
    found = with_running_stack(Settings(home=tmp_path))
    assert (found.kafka_bootstrap_servers, found.broker) == ("127.0.0.1:1", "tansu")
    assert found.trusts_watermarks is False
    assert with_running_stack(Settings(home=tmp_path, broker="kafka")).broker == "kafka"


def test_the_broker_jit_setting_reaches_the_jvm() -> None:
    assert "-XX:TieredStopAtLevel=1" in kafka_node.jvm_flags("c1")
    assert not any(f.startswith("-XX:TieredStopAtLevel") for f in kafka_node.jvm_flags("c2"))
    node = kafka_node.single_node(Settings.from_env({"NOVALOG_BROKER_JIT": "c2"}))
    assert node.jit == "c2"

