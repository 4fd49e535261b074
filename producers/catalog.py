"""The catalog a fresh cloud starts with, published as events (so projections and
validations see it like anything else):

- Nova's default flavors m1.tiny ... m1.xlarge;
- an image `cirros`: a real qcow2 file in novalog's image store, with its md5
  checksum and size, like Glance's;
- a network `private`, 10.0.0.0/24 (NOVALOG_PRIVATE_CIDR);
- projects `admin` and `demo`; users `admin` (role admin on admin) and `demo`
  (role member on demo), passwords from NOVALOG_ADMIN_PASSWORD /
  NOVALOG_DEMO_PASSWORD (dev defaults: admin / demo), stored as argon2 hashes.

Bootstrapping is idempotent: ids are derived from names, and only what the
projection does not have yet is published.
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from psycopg_pool import ConnectionPool

from novalog import request_ids
from novalog.idempotency import NAMESPACE, derived_id
from novalog.kafka import EventProducer, Topics
from novalog.publish import Publisher
from novalog.settings import Settings
from novalog.tokens import hash_password
from schemas import payloads

CatalogPayload = (payloads.FlavorCreated | payloads.ImageRegistered | payloads.NetworkCreated
                  | payloads.ProjectCreated | payloads.UserCreated | payloads.RoleAssigned)

DEFAULT_FLAVORS = [  # nova-manage's defaults: id, name, vCPUs, RAM MB, root GB
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
]
DEFAULT_QUOTAS = {"instances": 10, "cores": 20, "ram": 51200}  # Nova's defaults


def entity_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{name}"))


def make_image_file(store: Path, name: str = "cirros", virtual_size: str = "112M") -> Path:
    """A real (empty) qcow2 disk in the image store; made once."""
    path = store / f"{name}.qcow2"
    if not path.exists():
        store.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), virtual_size],
                       check=True, capture_output=True)
        tmp.rename(path)
    return path


def catalog_events(settings: Settings, hash_password: Callable[[str], str],
                   ) -> list[tuple[str, str, str, CatalogPayload]]:
    """(table, key, event type, payload) for everything the bootstrap wants to exist."""
    image = make_image_file(settings.home / "images")
    data = image.read_bytes()
    admin_pw, demo_pw = settings.admin_password, settings.demo_password
    admin, demo = entity_id("project", "admin"), entity_id("project", "demo")
    admin_user, demo_user = entity_id("user", "admin"), entity_id("user", "demo")
    items: list[tuple[str, str, str, CatalogPayload]] = []
    for flavorid, name, vcpus, ram, disk in DEFAULT_FLAVORS:
        items.append(("flavors", flavorid, "FlavorCreated", payloads.FlavorCreated(
            flavorid=flavorid, name=name, vcpus=vcpus, memory_mb=ram,
            root_gb=disk, ephemeral_gb=0, swap_mb=0, is_public=True,
            extra_specs={})))
    image_id = entity_id("image", "cirros")
    items.append(("images", image_id, "ImageRegistered", payloads.ImageRegistered(
        image_id=image_id, name="cirros", status="active", disk_format="qcow2",
        container_format="bare", size=len(data),
        checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(), min_disk=0,
        min_ram=0, location=str(image), visibility="public",
        properties={"hw_architecture": "x86_64"}, owner=None)))
    network_id = entity_id("network", "private")
    cidr = ipaddress.IPv4Network(settings.private_cidr)
    items.append(("networks", network_id, "NetworkCreated", payloads.NetworkCreated(
        network_id=network_id, name="private", cidr=str(cidr),
        gateway_ip=str(cidr[1]), allocation_start=str(cidr[2]),
        allocation_end=str(cidr[-2]), project_id=None, shared=True)))
    for project_id, name in ((admin, "admin"), (demo, "demo")):
        items.append(("projects", project_id, "ProjectCreated",
                      payloads.ProjectCreated(project_id=project_id, name=name,
                                              domain="Default")))
    for user_id, name, pw, project in ((admin_user, "admin", admin_pw, admin),
                                       (demo_user, "demo", demo_pw, demo)):
        items.append(("users", user_id, "UserCreated", payloads.UserCreated(
            user_id=user_id, name=name, password_hash=hash_password(pw),
            default_project_id=project, domain="Default")))
    items.append(("role_assignments", f"{admin_user}/{admin}/admin", "RoleAssigned",
                  payloads.RoleAssigned(user_id=admin_user, project_id=admin, role="admin")))
    items.append(("role_assignments", f"{demo_user}/{demo}/member", "RoleAssigned",
                  payloads.RoleAssigned(user_id=demo_user, project_id=demo, role="member")))
    return items


KEY_SQL = {
    "flavors": "SELECT flavorid FROM flavors",
    "images": "SELECT image_id FROM images",
    "networks": "SELECT network_id FROM networks",
    "projects": "SELECT project_id FROM projects",
    "users": "SELECT user_id FROM users",
    "role_assignments": "SELECT user_id || '/' || project_id || '/' || role "
                        "FROM role_assignments",
}


def _existing(pool: ConnectionPool) -> set[tuple[str, str]]:
    with pool.connection() as conn:
        return {(table, row[0]) for table, query in KEY_SQL.items()
                for row in conn.execute(query).fetchall()}


def bootstrap_catalog(settings: Settings, pool: ConnectionPool, *,
                      wait_s: float = 60.0) -> int:
    """Publish what is missing and wait until the projection shows it; returns the count."""

    have = _existing(pool)
    wanted = [i for i in catalog_events(settings, hash_password) if (i[0], i[1]) not in have]
    if wanted:
        topic = Topics(settings.topic_prefix).catalog
        producer = EventProducer(settings)
        pub = Publisher(producer, "bootstrap", settings.hostname)
        correlation = request_ids.new_request_id()
        for table, key, kind, payload in wanted:
            pub.emit(topic, kind, key.split("/")[0], payload, correlation_id=correlation,
                     event_id=derived_id("bootstrap", table, key))
        producer.flush()
    deadline = time.monotonic() + wait_s
    keys = {(i[0], i[1]) for i in wanted}
    while keys - _existing(pool):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the projector did not show the catalog within {wait_s:.0f}s "
                               "(is the projector role running?)")
        time.sleep(0.1)
    return len(wanted)
