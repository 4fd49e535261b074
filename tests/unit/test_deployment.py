"""docker-compose.yml and the Dockerfile, checked without a Docker engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from psycopg.conninfo import conninfo_to_dict

from novalog.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_kafka_runs_kraft_single_node_and_postgres_is_there() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    from novalog.embedded.kafka_node import KAFKA_VERSION

    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"  # what the embedded node runs
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka
    assert services["postgres"]["image"].startswith("postgres:")
    assert "healthcheck" in services["postgres"]


def test_every_role_is_a_service_wired_to_kafka_and_postgres() -> None:
    services = compose()["services"]
    pg = services["postgres"]["environment"]
    runs = {svc_name: svc["command"][-1] for svc_name, svc in services.items()
            if svc.get("command", [])[:2] == ["novalog", "run"]}
    assert set(runs.values()) == set(ROLES), "every role, and only roles, as services"
    assert services["bootstrap"]["command"] == ["novalog", "bootstrap"]
    for name, role in [*runs.items(), ("bootstrap", None)]:
        svc = services[name]
        if role == "compute":
            assert svc["environment"]["NOVALOG_COMPUTE_HOST"] == name.removeprefix("compute-")
        assert svc["volumes"] == ["novalog-home:/var/lib/novalog"]
        assert svc["build"] == "."
        env = svc["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        db = conninfo_to_dict(env["DATABASE_URL"])
        assert (db["host"], db["user"], db["password"], db["dbname"]) == (
            "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
        assert svc["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                     "postgres": {"condition": "service_healthy"}}
    api = services["api"]
    assert api["environment"]["NOVALOG_API_HOST"] == "0.0.0.0"
    assert f"{api['environment']['NOVALOG_API_PORT']}:8774" in api["ports"]


def test_the_image_installs_what_libvirt_python_needs_and_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("libvirt-dev", "pkg-config", "gcc", "qemu-utils"):
        assert package in dockerfile
    for folder in ("schemas", "novalog", "producers", "consumers", "projections"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "pip install --no-cache-dir ." in dockerfile


def test_the_app_builds_and_documents_every_route() -> None:
    """Building the app compiles every request model (a bad pattern fails here, not at
    `novalog up`); the OpenAPI document names the clients' endpoints."""
    from novalog.http import create_app
    from novalog.settings import Settings

    paths = create_app(Settings()).openapi()["paths"]
    for path in ("/identity/v3/auth/tokens", "/compute/v2.1/flavors", "/compute/v2.1/os-keypairs",
                 "/compute/v2.1/os-server-groups", "/image/v2/images/{image_id}/file",
                 "/networking/v2.0/subnets", "/compute/v2.1/os-hypervisors/statistics"):
        assert path in paths, path
