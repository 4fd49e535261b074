"""Real infrastructure for the tests, chosen once per session.

Broker and Postgres each come from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when
set, from testcontainers (Apache Kafka, Postgres) when a Docker engine answers,
and otherwise from the embedded binaries, started with the same code
`novalog up` uses. Every session gets its own topic prefix and database schema;
consumers are closed by the tests that open them, before this tears down.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from novalog import embedded
from novalog.db import check_database, ensure_schema
from novalog.embedded.postgres import embedded_database_url, prepare_postgres
from novalog.kafka import Topics, check_broker, ensure_topics, wait_for_brokers
from novalog.process import (
    Child,
    ProcessSpec,
    free_port,
    spawn,
    stop_child,
    tcp_answers,
    wait_until,
)
from novalog.settings import Settings

needs_java = pytest.mark.skipif(
    embedded.kafka_node.find_java() is None,
    reason="starts Apache Kafka nodes of its own: needs Java >= 17")


class EmbeddedPostgres:
    """The session's own Postgres, which an outage test may stop and start again."""

    def __init__(self, spec: ProcessSpec, url: str) -> None:
        self.spec, self.url = spec, url
        self.child: Child | None = None

    def start(self) -> None:
        self.child = spawn(self.spec)
        wait_until(lambda: _db_ready(self.url), self.child, "Postgres", 60)

    def stop(self) -> None:
        if self.child is not None:
            stop_child(self.child)
            self.child = None


@dataclass(frozen=True)
class Infra:
    bootstrap: str
    database_url: str
    source: str  # which of env / testcontainers / embedded each came from
    postgres: EmbeddedPostgres | None = None  # when the tests started it themselves
    broker: str | None = None  # "tansu" when the session runs on Tansu (NOVALOG_BROKER)


def cli(env: dict[str, str], *args: str, timeout: float = 300,
        ) -> subprocess.CompletedProcess[str]:
    """`novalog ARGS` as a user runs it, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "novalog", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database_url = os.environ.get("DATABASE_URL")
    sources = []
    with contextlib.ExitStack() as stack:
        docker = None if (bootstrap and database_url) else _docker_answers()
        pg: EmbeddedPostgres | None = None
        home = tmp_path_factory.mktemp("embedded")
        base = Settings(home=home, broker_port=free_port(), controller_port=free_port(),
                        postgres_port=free_port(), broker=os.environ.get("NOVALOG_BROKER") or None)
        kind = None
        if bootstrap:
            sources.append("broker: env")
        elif docker:
            from testcontainers.kafka import KafkaContainer

            kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.0"))
            bootstrap = kafka.get_bootstrap_server()
            sources.append("broker: testcontainers")
        else:
            kind = embedded.choose_broker(base)
            spec = embedded.prepare_broker(base, kind, home / "logs")
            child = spawn(spec)
            stack.callback(stop_child, child)
            wait_until(lambda: tcp_answers("127.0.0.1", base.broker_port), child, "broker", 60)
            bootstrap = spec.address
            wait_for_brokers(bootstrap, 1)
            sources.append(f"broker: embedded {spec.version}")
        if database_url:
            sources.append("postgres: env")
        elif docker:
            from testcontainers.postgres import PostgresContainer

            container = stack.enter_context(PostgresContainer("postgres:16", driver=None))
            database_url = container.get_connection_url()
            sources.append("postgres: testcontainers")
        else:
            pg = EmbeddedPostgres(prepare_postgres(base, home / "logs"),
                                  embedded_database_url(base))
            pg.start()
            stack.callback(pg.stop)
            database_url = pg.url
            sources.append("postgres: embedded")
        assert bootstrap and database_url
        check_broker(bootstrap, timeout=15)
        check_database(database_url)
        yield Infra(bootstrap, database_url, ", ".join(sources),
                    pg if not os.environ.get("DATABASE_URL") and not docker else None,
                    broker=kind if kind == "tansu" else None)


def _db_ready(url: str) -> bool:
    try:
        check_database(url, timeout=1)
    except Exception:
        return False
    return True


def pytest_report_header(config: pytest.Config) -> str:
    return "novalog infra: env > testcontainers (Docker) > embedded binaries"


@pytest.fixture(scope="session")
def session_settings(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with this session's own topic prefix and database schema."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=infra.bootstrap,
        database_url=infra.database_url,
        topic_prefix=f"test-{tag}",
        db_schema=f"test_{tag}",
        partitions=2,
        max_retries=2,
        retry_backoff_ms=10,
        home=tmp_path_factory.mktemp("home"),
        broker=infra.broker,
    )
    ensure_schema(settings)
    return settings


@pytest.fixture
def settings(session_settings: Settings) -> Settings:
    """Per test: a fresh topic prefix with its core topics, so tests never share a topic."""
    fresh = replace(session_settings,
                    topic_prefix=f"{session_settings.topic_prefix}-{uuid.uuid4().hex[:6]}")
    ensure_topics(fresh, Topics(fresh.topic_prefix).core())
    return fresh


@pytest.fixture
def novalog_env(infra: Infra, tmp_path: Path) -> dict[str, str]:
    """Environment for a `novalog` subprocess with its own home and free ports."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env.update(
        NOVALOG_HOME=str(tmp_path / "home"),
        NOVALOG_BROKER_PORT=str(free_port()),
        NOVALOG_CONTROLLER_PORT=str(free_port()),
        NOVALOG_POSTGRES_PORT=str(free_port()),
        NOVALOG_API_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return env
