"""The infrastructure `novalog up`, the test fixtures and the bench start themselves.

Apache Kafka (`kafka_node`) is the default broker; Tansu (`tansu`) is the fallback
where no Java is installed; Postgres comes from the pgserver wheel (`postgres`).
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL replace them with servers of one's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from novalog.embedded import kafka_node, tansu
from novalog.process import ProcessSpec, StackError
from novalog.settings import Settings

log = logging.getLogger(__name__)

KAFKA, TANSU, EXTERNAL = "kafka", "tansu", "external"


def choose_broker(settings: Settings) -> str:
    """kafka, tansu or external. NOVALOG_BROKER decides; unset, Kafka when Java is there,
    and Tansu, said in one line, when it is not."""
    if settings.kafka_bootstrap_servers:
        return EXTERNAL
    if settings.broker is not None:
        return settings.broker
    if kafka_node.find_java() is None:
        if (settings.home / "kafka").exists():
            raise StackError(f"{settings.home / 'kafka'} holds an Apache Kafka log, but no Java "
                             "was found (JAVA_HOME, PATH) to run it: install "
                             "openjdk-17-jre-headless, or `novalog reset` and use Tansu.")
        log.warning("no Java found (JAVA_HOME, PATH): using the Tansu broker, which keeps "
                    "nothing when stopped; install openjdk-17-jre-headless for Apache Kafka")
        return TANSU
    return KAFKA


def kafka_id_file(settings: Settings) -> Path:
    return settings.home / "kafka" / "cluster.id"


def prepare_broker(settings: Settings, kind: str, logs: Path) -> ProcessSpec:
    """Everything up to the start of the embedded broker's process (jars, storage)."""
    if kind == TANSU:
        return tansu.tansu_spec(settings, logs)
    [spec] = kafka_node.prepare_cluster(settings, [kafka_node.single_node(settings)], logs,
                                        kafka_id_file(settings))
    return spec


def embedded_paths(settings: Settings) -> list[Path]:
    """What `novalog reset` wipes: the embedded broker's and Postgres's data."""
    return [settings.home / "kafka", settings.home / "pgdata"]
