"""The embedded Apache Kafka's set-up, and each way it can go wrong: one clear line saying
what to do, and nothing half-started. Real Maven, real jars, real `novalog up`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from novalog import embedded
from novalog.embedded import kafka_node
from novalog.migrations import bind_log, log_binding, migrate
from novalog.process import StackError, free_port
from novalog.settings import Settings
from tests.conftest import Infra, cli, needs_java
from tests.integration.test_stack import _no_process_uses

pytestmark = [pytest.mark.integration]


@needs_java
def test_jars_are_cached_whole_and_a_corrupt_cache_is_fetched_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    jars = kafka_node.ensure_jars(settings)
    assert jars == tmp_path / "cache" / f"kafka-{kafka_node.KAFKA_VERSION}"
    assert kafka_node.cache_problem(jars) is None
    assert (jars / kafka_node.MAIN_JAR).is_file()
    assert any(p.name.startswith("log4j-slf4j-impl-") for p in jars.iterdir())
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [jars.name]  # no scratch left
    victim = jars / kafka_node.MAIN_JAR
    victim.write_bytes(victim.read_bytes()[:1000])  # a truncated download
    assert kafka_node.cache_problem(jars) == f"{kafka_node.MAIN_JAR} does not match its checksum"
    with caplog.at_level(logging.WARNING):
        assert kafka_node.ensure_jars(settings) == jars
    assert "is corrupt" in caplog.text and "fetching it again" in caplog.text
    assert kafka_node.cache_problem(jars) is None


@needs_java
def test_maven_central_out_of_reach_is_one_clear_line_and_leaves_no_half_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an empty local repository, and no ~/.m2/settings.xml whose mirror would hide the URL
    monkeypatch.setenv("MAVEN_OPTS", f"-Duser.home={tmp_path} "
                                     f"-Dmaven.repo.local={tmp_path / 'empty-m2'}")
    repo = f"http://127.0.0.1:{free_port()}/maven2"
    settings = Settings(cache_dir=tmp_path / "cache", maven_repository=repo)
    with pytest.raises(StackError) as caught:
        kafka_node.ensure_jars(settings)
    message = str(caught.value)
    assert f"could not fetch Apache Kafka {kafka_node.KAFKA_VERSION} from {repo}" in message
    assert "NOVALOG_MAVEN_REPOSITORY" in message and "NOVALOG_BROKER=tansu" in message
    assert "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []  # no half cache, no scratch


def test_without_java_the_default_falls_back_to_tansu_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level(logging.WARNING):  # a home of its own: the default may hold a Kafka log
        assert embedded.choose_broker(Settings(home=tmp_path / "home")) == embedded.TANSU
    assert "no Java found" in caplog.text and "Tansu" in caplog.text
    assert embedded.choose_broker(Settings(broker="kafka")) == embedded.KAFKA  # then refused
    assert embedded.choose_broker(Settings(kafka_bootstrap_servers="k:9092")) == "external"


def _bin_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only these tools of this machine."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(Path(found).resolve())
    return str(bindir)


def _fake_java(tmp_path: Path, version: str) -> str:
    home = tmp_path / "old-jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2023-07-18' >&2\n")
    java.chmod(0o755)
    return str(home)


def _up_refused(env: dict[str, str], *needles: str) -> str:
    result = cli(env, "up")
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, text
    _no_process_uses(env["NOVALOG_HOME"])
    return text


def test_no_java_when_kafka_is_asked_for(novalog_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in novalog_env.items() if k != "JAVA_HOME"}
    env.update(NOVALOG_BROKER="kafka", PATH=str(tmp_path))
    _up_refused(env, "Apache Kafka needs Java >= 17 and none was found",
                "install openjdk-17-jre-headless", "NOVALOG_BROKER=tansu")


def test_a_java_older_than_17(novalog_env: dict[str, str], tmp_path: Path) -> None:
    env = {**novalog_env, "JAVA_HOME": _fake_java(tmp_path, "11.0.20")}
    _up_refused(env, "is Java 11; Apache Kafka", "needs Java >= 17", "set JAVA_HOME")


@needs_java
def test_no_maven_and_no_cached_jars(novalog_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in novalog_env.items() if k != "JAVA_HOME"}
    env.update(PATH=_bin_with(tmp_path, "java"), NOVALOG_CACHE_DIR=str(tmp_path / "cache"))
    _up_refused(env, "jars are not cached", "Maven (mvn) is not installed", "install maven")
    assert not (tmp_path / "cache" / f"kafka-{kafka_node.KAFKA_VERSION}").exists()


@needs_java
def test_a_taken_controller_port(novalog_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(novalog_env["NOVALOG_CONTROLLER_PORT"])))
        blocker.listen()
        _up_refused(novalog_env, f"port {novalog_env['NOVALOG_CONTROLLER_PORT']} on 127.0.0.1 "
                    "is taken", "NOVALOG_CONTROLLER_PORT")


@needs_java
def test_a_data_dir_of_another_cluster(novalog_env: dict[str, str]) -> None:
    settings = Settings.from_env(novalog_env)
    embedded.prepare_broker(settings, embedded.KAFKA, settings.home / "logs")  # formats it
    formatted = embedded.kafka_id_file(settings).read_text().strip()
    embedded.kafka_id_file(settings).write_text(kafka_node.new_cluster_id())
    _up_refused(novalog_env, f"holds Kafka cluster {formatted}, not this home's cluster",
                "`novalog reset` wipes the embedded data")


@needs_java
def test_reset_wipes_the_embedded_data_and_is_refused_while_running(
        novalog_env: dict[str, str]) -> None:
    settings = Settings.from_env(novalog_env)
    embedded.prepare_broker(settings, embedded.KAFKA, settings.home / "logs")
    (settings.home / "stack.json").write_text(json.dumps(
        {"supervisor_pid": os.getpid(), "started_at": 0, "components": []}))
    refused = cli(novalog_env, "reset", "--yes")
    assert refused.returncode == 1 and "`novalog down` first" in refused.stderr
    assert (settings.home / "kafka").exists()
    (settings.home / "stack.json").unlink()
    done = cli(novalog_env, "reset", "--yes")
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and not (settings.home / "kafka").exists()
    assert "nothing to remove" in cli(novalog_env, "reset", "--yes").stdout
    asked = subprocess.run([sys.executable, "-m", "novalog", "reset"], env=novalog_env,
                           input="n\n", capture_output=True, text=True, timeout=60)
    assert asked.returncode == 1  # declined: nothing done


def test_no_java_with_a_kafka_log_in_the_home_is_an_error_not_tansu(
        novalog_env: dict[str, str], tmp_path: Path) -> None:
    (Path(novalog_env["NOVALOG_HOME"]) / "kafka" / "data").mkdir(parents=True)
    env = {k: v for k, v in novalog_env.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)
    _up_refused(env, "holds an Apache Kafka log, but no Java was found",
                "`novalog reset` and use Tansu")


def _bound_schema(infra: Infra, broker: str, cluster: str) -> dict[str, str]:
    """Environment of a deployment whose schema (in the session's Postgres) already folds
    the log of `broker` / `cluster`."""
    schema = f"bound_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=infra.database_url, db_schema=schema)
    migrate(settings)
    assert bind_log(settings, broker, cluster) == (broker, cluster)
    return {"DATABASE_URL": infra.database_url, "NOVALOG_DB_SCHEMA": schema}


@needs_java
def test_a_schema_that_folds_another_clusters_log_is_refused(
        novalog_env: dict[str, str], infra: Infra) -> None:
    other = kafka_node.new_cluster_id()
    env = {**novalog_env, **_bound_schema(infra, "kafka", other)}
    _up_refused(env, f"holds the folds of Kafka cluster {other}", "`novalog reset`",
                "NOVALOG_DB_SCHEMA")
    reset = cli(env, "reset", "--yes")  # the remedy: the schema goes with the embedded data
    assert reset.returncode == 0, reset.stderr
    assert f"schema {env['NOVALOG_DB_SCHEMA']}" in " ".join(reset.stdout.split())
    assert log_binding(Settings(database_url=infra.database_url,
                                db_schema=env["NOVALOG_DB_SCHEMA"])) is None


def test_tansu_is_refused_on_a_schema_that_folds_a_kafka_log(
        novalog_env: dict[str, str], infra: Infra) -> None:
    env = {**novalog_env, "NOVALOG_BROKER": "tansu",
           **_bound_schema(infra, "kafka", kafka_node.new_cluster_id())}
    _up_refused(env, "starting on Tansu would wipe them", "NOVALOG_BROKER=kafka")
    settings = Settings(database_url=infra.database_url, db_schema=env["NOVALOG_DB_SCHEMA"])
    assert log_binding(settings) is not None  # nothing was wiped
