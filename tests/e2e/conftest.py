"""Whole clouds for end-to-end tests: `novalog up` as a subprocess on the session's
broker and Postgres, with its own topic prefix, schema, home, API port and token key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet

from novalog.client import NovalogClient
from novalog.kafka import EventProducer, Topics, scan_topic
from novalog.process import free_port
from novalog.publish import Publisher
from novalog.settings import Settings
from schemas import Event, SerializationError, decode
from tests.conftest import Infra


@dataclass
class Cloud:
    env: dict[str, str]
    home: Path
    api_url: str
    settings: Settings
    token_key: str
    proc: subprocess.Popen[bytes]

    def client(self, user: str = "admin", password: str | None = None,
               project: str = "admin") -> NovalogClient:
        if password is None:
            password = self.env.get("NOVALOG_ADMIN_PASSWORD", "admin") if user == "admin" \
                else user
        return NovalogClient(self.api_url, user, password, project)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "novalog", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def compute_hosts(self) -> list[str]:
        return sorted(p.name for p in (self.home / "compute").iterdir() if p.is_dir())

    def components(self) -> list[dict[str, Any]]:
        """The stack's processes as `novalog status --json` lists them (pid, state...)."""
        return list(json.loads(self.cli("status", "--json").stdout)["components"])

    def image_id(self) -> str:
        return str(self.client().find("image", "cirros")["id"])

    def wait_servers(self, ids: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
        """Each server once it is ACTIVE or ERROR."""
        client, done = self.client(), dict[str, dict[str, Any]]()
        deadline = time.monotonic() + timeout
        while len(done) < len(ids):
            assert time.monotonic() < deadline, f"still building: {set(ids) - set(done)}"
            for server in client.get("/compute/v2.1/servers/detail",
                                     all_tenants="1")["servers"]:
                if server["id"] in ids and server["status"] in ("ACTIVE", "ERROR"):
                    done[server["id"]] = server
            time.sleep(0.2)
        return done

    def publish_catalog(self, event_type: str, key: str, payload: dict[str, Any]) -> None:
        """A catalog fact, as an operator's tooling would publish it."""
        producer = EventProducer(self.settings)
        Publisher(producer, "test", "pytest").emit(
            Topics(self.settings.topic_prefix).catalog, event_type, key, payload,
            correlation_id=f"req-{uuid.uuid4()}")
        producer.flush()

    def raise_quotas(self, project_name: str = "admin") -> None:
        """Unlimited instances, cores and RAM for a project (PUT os-quota-sets as admin)."""
        from producers.catalog import entity_id

        project = entity_id("project", project_name)
        limits = self.client().request("PUT", f"/compute/v2.1/os-quota-sets/{project}",
                                       json={"quota_set": {"instances": -1, "cores": -1,
                                                           "ram": -1}})["quota_set"]
        assert limits == {"instances": -1, "cores": -1, "ram": -1}

    def topic_events(self, topic: str) -> list[Event]:
        """Every decodable event of a topic, in log order per partition."""
        events = []
        for msg in scan_topic(self.settings, topic):
            with suppress(SerializationError):
                events.append(decode(msg.value() or b""))
        return events


@contextmanager
def running_cloud(infra: Infra, home: Path, *, hosts: int = 4, replicas: int = 1,
                  extra_env: dict[str, str] | None = None,
                  up_args: tuple[str, ...] = ()) -> Iterator[Cloud]:
    tag = uuid.uuid4().hex[:8]
    key = Fernet.generate_key().decode()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVALOG_", "OS_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=infra.bootstrap, DATABASE_URL=infra.database_url,
               NOVALOG_TOPIC_PREFIX=f"e2e-{tag}", NOVALOG_DB_SCHEMA=f"e2e_{tag}",
               NOVALOG_HOME=str(home), NOVALOG_API_PORT=str(port), NOVALOG_PARTITIONS="2",
               NOVALOG_TOKEN_KEYS=key, NOVALOG_API_URL=f"http://127.0.0.1:{port}",
               PYTHONUNBUFFERED="1", **(extra_env or {}))
    if infra.broker:
        env["NOVALOG_BROKER"] = infra.broker
    env["OS_PASSWORD"] = env.get("NOVALOG_ADMIN_PASSWORD", "admin")  # the CLI logs in as admin
    log = open(home.parent / f"up-{tag}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "novalog", "up", "--hosts", str(hosts),
                             "--replicas", str(replicas), *up_args], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    settings = Settings.from_env(env)
    cloud = Cloud(env, home, f"http://127.0.0.1:{port}", settings, key, proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            status = cloud.cli("status", "--json")
            if status.returncode == 0 and json.loads(status.stdout)["ready"]:
                break
            assert proc.poll() is None, (home.parent / f"up-{tag}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "cloud did not come up"
            time.sleep(0.3)
        yield cloud
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def assert_one_of_everything(cloud: Cloud, servers: list[dict[str, Any]]) -> None:
    """Every server ACTIVE with one address, one claim, one domain and one InstanceSpawned;
    usage equal to the flavors; the projection equal to a replay of the log."""
    admin = cloud.client()
    ips = [a["addr"] for s in servers for a in s["addresses"]["private"]]
    assert len(ips) == len(servers) and len(set(ips)) == len(ips)  # one address per server
    with psycopg.connect(cloud.settings.require_database_url()) as conn:
        claims = conn.execute(f'SELECT instance_uuid, host, stage FROM '
                              f'"{cloud.settings.db_schema}".compute_claims').fetchall()
    assert sorted(c[0] for c in claims) == sorted(s["id"] for s in servers)  # one claim each
    assert {c[2] for c in claims} == {"active"}
    flavors = {f["id"]: f for f in admin.get("/compute/v2.1/flavors/detail")["flavors"]}
    deadline = time.monotonic() + 90
    while True:
        nodes = {h["service"]["host"]: h for h in
                 admin.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]}
        wrong = []
        for host, node in nodes.items():
            mine = [s for s in servers if s["OS-EXT-SRV-ATTR:host"] == host]
            domains = list((cloud.home / "compute" / host / "instances").glob("*/libvirt.xml"))
            want = (sum(flavors[s["flavor"]["id"]]["ram"] for s in mine), len(mine))
            if (node["memory_mb_used"], node["running_vms"]) != want or len(domains) != len(mine):
                wrong.append((host, node["memory_mb_used"], node["running_vms"], want,
                              len(domains)))
        if not wrong:
            break
        assert time.monotonic() < deadline, wrong
        time.sleep(1)
    result = cloud.cli("replay", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    events = cloud.topic_events(f"{cloud.settings.topic_prefix}.instances")
    deleted = {e.aggregate_id for e in events if e.event_type == "InstanceDeleted"}
    spawns = [e for e in events if e.event_type == "InstanceSpawned" and
              e.aggregate_id not in deleted]  # the servers that are still there
    spawned = Counter(e.aggregate_id for e in spawns)
    ids = Counter((e.aggregate_id, e.event_type, e.event_id) for e in spawns)
    assert set(spawned) == {s["id"] for s in servers}
    assert len(ids) == len(servers)  # re-emitted spawns carry one id: de-duplicated


def claims(cloud: Cloud) -> set[str]:
    with psycopg.connect(cloud.settings.require_database_url()) as conn:
        return {r[0] for r in conn.execute(
            f'SELECT instance_uuid FROM "{cloud.settings.db_schema}".compute_claims')}


def instance_dirs(cloud: Cloud) -> set[str]:
    return {d.name for host in cloud.compute_hosts()
            for d in (cloud.home / "compute" / host / "instances").glob("*-*-*-*-*")}


def running_vms(cloud: Cloud) -> int:
    return sum(h["running_vms"] for h in
               cloud.client().get("/compute/v2.1/os-hypervisors/detail")["hypervisors"])


def leftovers(cloud: Cloud, gone: set[str]) -> dict[str, object]:
    """What the deleted servers still hold anywhere: claims, instance directories
    (overlay, console, libvirt.xml), addresses not released."""
    network = cloud.topic_events(f"{cloud.settings.topic_prefix}.network")
    allocated = Counter(e.payload["ip_address"] for e in network
                        if e.event_type == "IpAllocated" and e.aggregate_id and
                        e.payload["instance_uuid"] in gone)
    released = Counter(e.payload["ip_address"] for e in network
                       if e.event_type == "IpReleased" and e.payload["instance_uuid"] in gone)
    held = {ip for ip in allocated if allocated[ip] > released[ip]}
    return {k: v for k, v in {"claims": claims(cloud) & gone,
                              "dirs": instance_dirs(cloud) & gone,
                              "addresses": held}.items() if v}
