"""After the boot: every role a service that heartbeats, and servers deleted from any state.

One cloud for the module, with a short report interval and service_down_time, so a
frozen role turns down in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Infra
from tests.e2e.conftest import (
    Cloud,
    claims,
    instance_dirs,
    leftovers,
    running_cloud,
    running_vms,
)

pytestmark = [pytest.mark.integration]

DOWN_TIME_S = 4.0
HOST_MB = 4096  # m1.large (8192) fits nowhere: NoValidHost on demand
CONFIRM_WINDOW_S = 6.0  # resize_confirm_window: a move left unconfirmed is confirmed
CONTROL = {"nova-scheduler", "nova-conductor", "nova-network", "novalog-projector",
           "cinder-volume"}


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("lifecycle") / "home", hosts=2,
                       extra_env={"NOVALOG_REPORT_INTERVAL_S": "0.5",
                                  "NOVALOG_SERVICE_DOWN_TIME_S": str(DOWN_TIME_S),
                                  "NOVALOG_COMPUTE_MEMORY_MB": str(HOST_MB),
                                  "NOVALOG_RESIZE_CONFIRM_WINDOW_S": str(CONFIRM_WINDOW_S)},
                       ) as c:
        c.raise_quotas()
        yield c


def services(cloud: Cloud, **query: str) -> dict[tuple[str, str], dict[str, Any]]:
    found = cloud.client().get("/compute/v2.1/os-services", **query)["services"]
    return {(s["binary"], s["host"]): s for s in found}


def until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def pid_of(cloud: Cloud, component: str) -> int:
    return int(next(c for c in cloud.components() if c["name"] == component)["pid"])


def test_every_role_is_a_service_and_a_frozen_one_turns_down(cloud: Cloud) -> None:
    until("every role up", lambda: {b for (b, _), s in services(cloud).items()
                                    if s["state"] == "up"} >= CONTROL | {"nova-compute"})
    listed = services(cloud)
    assert sorted(h for (b, h) in listed if b == "nova-compute") == ["cmp1", "cmp2"]
    assert all(s["zone"] == "internal" for (b, _), s in listed.items() if b in CONTROL)
    assert list(services(cloud, binary="nova-compute", host="cmp2")) == [("nova-compute",
                                                                          "cmp2")]
    health = cloud.http().get("/healthz")
    assert health.status_code == 200 and health.json()["services"].startswith("ok"), \
        health.json()
    # a conductor that stops working stops beating: down after service_down_time, and
    # /healthz says the control plane is not whole
    conductor = pid_of(cloud, "conductor")
    os.kill(conductor, signal.SIGSTOP)
    try:
        until("conductor down", lambda: all(
            s["state"] == "down" for (b, _), s in services(cloud).items()
            if b == "nova-conductor"), timeout=DOWN_TIME_S + 10)
        health = cloud.http().get("/healthz")
        assert health.status_code == 503
        assert health.json()["services"].startswith("down: nova-conductor"), health.json()
    finally:
        os.kill(conductor, signal.SIGCONT)
    until("conductor up again", lambda: cloud.http().get("/healthz").status_code == 200)


def test_a_compute_host_that_stops_heartbeating_gets_no_new_builds(cloud: Cloud) -> None:
    compute = pid_of(cloud, "compute-cmp1")
    os.kill(compute, signal.SIGSTOP)
    try:
        until("cmp1 down", lambda: services(cloud)[("nova-compute", "cmp1")]["state"]
              == "down", timeout=DOWN_TIME_S + 10)
        assert cloud.http().get("/healthz").status_code == 200  # a host is not the cloud
        nodes = cloud.client().get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]
        assert {h["service"]["host"]: h["state"] for h in nodes} == {"cmp1": "down",
                                                                    "cmp2": "up"}
        hosts = []
        for i in range(3):
            result = cloud.cli("boot", f"while-cmp1-down-{i}", "--flavor", "m1.tiny",
                               "--image", "cirros", "--wait")
            assert result.returncode == 0, result.stdout + result.stderr
            server = cloud.client().find("server", f"while-cmp1-down-{i}")
            hosts.append(server["OS-EXT-SRV-ATTR:host"])
        assert hosts == ["cmp2"] * 3
    finally:
        os.kill(compute, signal.SIGCONT)
    until("cmp1 up again", lambda: services(cloud)[("nova-compute", "cmp1")]["state"] == "up")


# -- delete ------------------------------------------------------------------------------
def boot(cloud: Cloud, name: str, flavor: str = "1", user: str = "admin",
         **extra: Any) -> str:
    client = cloud.client(user, user, user) if user != "admin" else cloud.client()
    body = {"server": {"name": name, "flavorRef": flavor, "imageRef": cloud.image_id(),
                       **extra}}
    created = client.request("POST", "/compute/v2.1/servers", json=body)
    return str(created["server"]["id"])


def events(cloud: Cloud, server_id: str) -> list[dict[str, Any]]:
    return list(cloud.client().get(f"/novalog/v1/servers/{server_id}/events")["events"])


def wait_deleted(cloud: Cloud, server_id: str, timeout: float = 30) -> None:
    until(f"{server_id} deleted", lambda: any(
        e["event_type"] == "InstanceDeleted" for e in events(cloud, server_id)), timeout)


def test_delete_an_active_server_frees_everything(cloud: Cloud) -> None:
    server_id = boot(cloud, "to-delete")
    cloud.wait_servers([server_id])
    host = cloud.client().get(f"/compute/v2.1/servers/{server_id}")["server"][
        "OS-EXT-SRV-ATTR:host"]
    vms = running_vms(cloud)
    assert server_id in claims(cloud) and server_id in instance_dirs(cloud)
    admin = cloud.client()
    response = admin.http.delete(f"/compute/v2.1/servers/{server_id}",
                                 headers={"X-Auth-Token": admin.token()})
    assert response.status_code == 204 and response.content == b""
    request_id = response.headers["X-Openstack-Request-Id"]
    wait_deleted(cloud, server_id)
    steps = [(e["event_type"], e["vm_state"], e["task_state"]) for e in events(cloud, server_id)]
    assert steps[-3:] == [("InstanceDeleteRequested", "active", "deleting"),
                          ("InstanceTerminateStarted", "active", "deleting"),
                          ("InstanceDeleted", "deleted", None)]
    gone = admin.http.get(f"/compute/v2.1/servers/{server_id}",
                          headers={"X-Auth-Token": admin.token()})
    assert gone.status_code == 404
    assert gone.json()["itemNotFound"]["message"] == \
        f"Instance {server_id} could not be found."
    again = admin.http.delete(f"/compute/v2.1/servers/{server_id}",
                              headers={"X-Auth-Token": admin.token()})
    assert again.status_code == 404
    assert server_id not in {s["id"] for s in admin.get("/compute/v2.1/servers")["servers"]}
    deleted = admin.get("/compute/v2.1/servers/detail", deleted="True")["servers"]
    assert [s["status"] for s in deleted if s["id"] == server_id] == ["DELETED"]
    until("usage reported", lambda: running_vms(cloud) == vms - 1)
    assert not leftovers(cloud, {server_id})
    actions = admin.get(f"/compute/v2.1/servers/{server_id}/os-instance-actions")
    assert [a["action"] for a in actions["instanceActions"]] == ["delete", "create"]
    delete = admin.get(f"/compute/v2.1/servers/{server_id}/os-instance-actions/{request_id}")
    assert [(e["event"], e["result"]) for e in delete["instanceAction"]["events"]] == \
        [("compute_terminate_instance", "Success")]
    assert any(e.event_type == "TerminateInstance" for e in
               cloud.topic_events(f"{cloud.settings.topic_prefix}.compute.{host}"))


def test_a_non_admin_cannot_list_deleted_servers_nor_delete_anothers(cloud: Cloud) -> None:
    admins = boot(cloud, "admins-own")
    demo = cloud.client("demo", "demo", "demo")
    forbidden = demo.http.get("/compute/v2.1/servers/detail", params={"status": "DELETED"},
                              headers={"X-Auth-Token": demo.token()})
    assert forbidden.status_code == 403
    assert forbidden.json()["forbidden"]["message"] == \
        "Only administrators may list deleted instances"
    other = demo.http.delete(f"/compute/v2.1/servers/{admins}",
                             headers={"X-Auth-Token": demo.token()})
    assert other.status_code == 404  # another project's server: not even its existence
    cloud.wait_servers([admins])
    assert cloud.client().get(f"/compute/v2.1/servers/{admins}")["server"]["status"] == \
        "ACTIVE"


def test_delete_from_error_is_local_and_frees_the_quota(cloud: Cloud) -> None:
    from producers.catalog import entity_id

    cloud.client().request("PUT", f"/compute/v2.1/os-quota-sets/{entity_id('project', 'demo')}",
                           json={"quota_set": {"instances": 1, "cores": -1, "ram": -1}})
    errored = boot(cloud, "too-big", flavor="4", user="demo")  # m1.large fits no host
    until("ERROR", lambda: cloud.client().get(f"/compute/v2.1/servers/{errored}")["server"][
        "status"] == "ERROR")
    demo = cloud.client("demo", "demo", "demo")
    full = demo.http.post("/compute/v2.1/servers", headers={"X-Auth-Token": demo.token()},
                          json={"server": {"name": "second", "flavorRef": "1",
                                           "imageRef": cloud.image_id()}})
    assert full.status_code == 403  # the errored server holds the quota
    result = cloud.cli("delete", errored, "--wait", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "InstanceDeleted" in result.stdout and "DELETED" in result.stdout
    steps = [e["event_type"] for e in events(cloud, errored)]
    assert steps[-2:] == ["InstanceDeleteRequested", "InstanceDeleted"]  # no host involved
    assert not any(e.aggregate_id == errored for h in ("cmp1", "cmp2")
                   for e in cloud.topic_events(f"{cloud.settings.topic_prefix}.compute.{h}"))
    second = boot(cloud, "second", user="demo")  # the quota is free again
    cloud.wait_servers([second])


@pytest.mark.slow
def test_a_delete_at_any_moment_of_a_build_leaves_nothing_behind(cloud: Cloud) -> None:
    delays = [0.0, 0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.2, 0.5]
    vms_before = running_vms(cloud)
    ids = []
    admin = cloud.client()
    token = admin.token()
    for i, delay in enumerate(delays):
        server_id = boot(cloud, f"racing-{i}")
        time.sleep(delay)
        response = httpx.delete(f"{cloud.api_url}/compute/v2.1/servers/{server_id}",
                                headers={"X-Auth-Token": token})
        assert response.status_code == 204
        ids.append(server_id)
    for server_id in ids:
        wait_deleted(cloud, server_id, timeout=60)
    # and a delete that reaches the log before the scheduler's placement: the scheduler
    # is frozen, so the delete is local, and the placement that comes later is never built
    scheduler = pid_of(cloud, "scheduler")
    os.kill(scheduler, signal.SIGSTOP)
    try:
        raced = [boot(cloud, f"raced-{i}") for i in range(3)]
        for server_id in raced:
            assert httpx.delete(f"{cloud.api_url}/compute/v2.1/servers/{server_id}",
                                headers={"X-Auth-Token": token}).status_code == 204
        for server_id in raced:
            wait_deleted(cloud, server_id)
    finally:
        os.kill(scheduler, signal.SIGCONT)
    until("the late placements", lambda: all(
        any(e["event_type"] == "InstanceScheduled" for e in events(cloud, i)) for i in raced))
    time.sleep(1)  # what the conductor would do with them
    commands = [e for h in cloud.compute_hosts()
                for e in cloud.topic_events(f"{cloud.settings.topic_prefix}.compute.{h}")]
    assert not [e for e in commands if e.aggregate_id in raced]  # no build, no terminate
    for server_id in raced:
        assert [e["event_type"] for e in events(cloud, server_id)][1:3] == \
            ["InstanceDeleteRequested", "InstanceDeleted"]
    ids += raced
    gone = set(ids)
    until("nothing left", lambda: not leftovers(cloud, gone), timeout=30)
    until("usage back", lambda: running_vms(cloud) == vms_before, timeout=30)
    assert cloud.client().get("/compute/v2.1/os-services")  # every role still answers
    letters = cloud.cli("dead-letters", "--json")
    assert letters.returncode == 0
    assert not [i for i in ids if i in letters.stdout], letters.stdout[-2000:]
    result = cloud.cli("replay", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr


# -- reboot, stop, start ----------------------------------------------------------------
def action(cloud: Cloud, server_id: str, body: dict[str, Any]) -> httpx.Response:
    admin = cloud.client()
    return admin.http.post(f"/compute/v2.1/servers/{server_id}/action", json=body,
                           headers={"X-Auth-Token": admin.token()})


def states_after(cloud: Cloud, server_id: str, seq: int) -> list[tuple[str, str, Any]]:
    return [(e["event_type"], e["vm_state"], e["task_state"])
            for e in events(cloud, server_id) if e["seq"] > seq]


def test_reboot_stop_and_start_walk_novas_task_states(cloud: Cloud) -> None:
    server_id = boot(cloud, "power")
    cloud.wait_servers([server_id])
    seq = events(cloud, server_id)[-1]["seq"]
    result = cloud.cli("reboot", server_id, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert states_after(cloud, server_id, seq) == [
        ("InstanceRebootRequested", "active", "rebooting"),
        ("InstanceRebootPending", "active", "reboot_pending"),
        ("InstanceRebootStarted", "active", "reboot_started"),
        ("InstanceRebooted", "active", None)]
    vms = running_vms(cloud)
    seq = events(cloud, server_id)[-1]["seq"]
    assert cloud.cli("stop", server_id, "--wait").returncode == 0
    assert states_after(cloud, server_id, seq) == [
        ("InstanceStopRequested", "active", "powering-off"),
        ("InstanceStopped", "stopped", None)]
    shown = cloud.client().get(f"/compute/v2.1/servers/{server_id}")["server"]
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("SHUTOFF", 4)
    until("libvirt shut it off", lambda: running_vms(cloud) == vms - 1)
    # from SHUTOFF a SOFT reboot and a stop are refused with Nova's words, nothing published
    seq = events(cloud, server_id)[-1]["seq"]
    refusals: list[tuple[dict[str, Any], str]] = [
            ({"reboot": {"type": "SOFT"}},
             f"Cannot 'reboot' instance {server_id} while it is in vm_state stopped"),
            ({"os-stop": None},
             f"Cannot 'stop' instance {server_id} while it is in vm_state stopped"),
            ({"reboot": {"type": "SIDEWAYS"}}, "Invalid input for field/attribute type. Value: "
             "SIDEWAYS. 'SIDEWAYS' is not one of ['SOFT', 'HARD']"),
            ({"pause": None}, "There is no such action: pause")]
    for body, message in refusals:
        refused = action(cloud, server_id, body)
        assert refused.status_code in (400, 409), refused.text
        assert next(iter(refused.json().values()))["message"] == message
    time.sleep(1)
    assert states_after(cloud, server_id, seq) == []
    assert cloud.cli("start", server_id, "--wait").returncode == 0
    shown = cloud.client().get(f"/compute/v2.1/servers/{server_id}")["server"]
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("ACTIVE", 1)
    until("libvirt runs it", lambda: running_vms(cloud) == vms)
    seq = events(cloud, server_id)[-1]["seq"]
    assert action(cloud, server_id, {"reboot": {"type": "HARD"}}).status_code == 202
    until("hard reboot done", lambda: states_after(cloud, server_id, seq)[-1:] ==
          [("InstanceRebooted", "active", None)])
    assert [t for _, _, t in states_after(cloud, server_id, seq)] == [
        "rebooting_hard", "reboot_pending_hard", "reboot_started_hard", None]
    actions = cloud.client().get(f"/compute/v2.1/servers/{server_id}/os-instance-actions")
    assert [a["action"] for a in actions["instanceActions"]] == \
        ["reboot", "start", "stop", "reboot", "create"]
    replay = cloud.cli("replay", "--verify")
    assert replay.returncode == 0, replay.stdout + replay.stderr


# -- moves: resize, confirm / revert, cold and live migration, evacuation; rescue ----------
def delete_all(cloud: Cloud, host: str | None = None) -> None:
    admin = cloud.client()
    for found in admin.get("/compute/v2.1/servers/detail", all_tenants="1")["servers"]:
        if host in (None, found["OS-EXT-SRV-ATTR:host"]):
            assert admin.http.delete(f"/compute/v2.1/servers/{found['id']}", headers={
                "X-Auth-Token": admin.token()}).status_code == 204
            wait_deleted(cloud, found["id"])


def host_claims(cloud: Cloud, server_id: str) -> dict[str, tuple[str, int]]:
    """host -> (stage, memory MB) of the server's claims: what each tracker holds."""
    with psycopg.connect(cloud.settings.require_database_url()) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            f'SELECT host, stage, memory_mb FROM "{cloud.settings.db_schema}".compute_claims '
            "WHERE instance_uuid = %s", (server_id,))}


def used_mb(cloud: Cloud) -> dict[str, int]:
    return {h["service"]["host"]: h["memory_mb_used"] for h in
            cloud.client().get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]}


def server(cloud: Cloud, server_id: str) -> dict[str, Any]:
    return dict(cloud.client().get(f"/compute/v2.1/servers/{server_id}")["server"])


def migrations(cloud: Cloud, server_id: str) -> list[dict[str, Any]]:
    return list(cloud.client().get("/compute/v2.1/os-migrations",
                                   instance_uuid=server_id)["migrations"])


def action_names(cloud: Cloud, server_id: str) -> list[tuple[str, list[str]]]:
    """(action, its events' names sorted), newest action first, each finished Success."""
    admin, out = cloud.client(), []
    path = f"/compute/v2.1/servers/{server_id}/os-instance-actions"
    for listed in admin.get(path)["instanceActions"]:
        events = admin.get(f"{path}/{listed['request_id']}")["instanceAction"]["events"]
        assert all(e["result"] == "Success" for e in events if listed["action"] != "create")
        out.append((listed["action"], sorted({e["event"] for e in events})))
    return out


def on_host(cloud: Cloud, name: str, host: str) -> str:
    server_id = boot(cloud, name, availability_zone=f"nova:{host}")
    cloud.wait_servers([server_id])
    return server_id


def test_resize_walks_to_verify_resize_holding_both_hosts_then_confirm_frees_the_source(
        cloud: Cloud) -> None:
    delete_all(cloud)  # the hosts to themselves: each move's accounting is exact
    server_id = on_host(cloud, "to-resize", "cmp1")
    before = used_mb(cloud)
    seq = events(cloud, server_id)[-1]["seq"]
    result = cloud.cli("resize", server_id, "m1.small", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert states_after(cloud, server_id, seq) == [
        ("InstanceResizeRequested", "active", "resize_prep"),
        ("InstanceMigrationStarted", "active", "resize_prep"),
        ("InstanceMigrationScheduled", "active", "resize_prep"),
        ("InstanceMigrationClaimed", "active", "resize_prep"),
        ("InstanceResizeMigrating", "active", "resize_migrating"),
        ("InstanceResizeMigrated", "active", "resize_migrated"),
        ("InstanceResizeFinishing", "active", "resize_finish"),
        ("InstanceResized", "resized", None)]
    shown = server(cloud, server_id)
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"], shown["flavor"]["original_name"]
            if "original_name" in shown["flavor"] else shown["flavor"]["id"]) in \
        {("VERIFY_RESIZE", "cmp2", "m1.small"), ("VERIFY_RESIZE", "cmp2", "2")}
    # both hosts hold the instance until the answer: the old guest off, the new one running
    assert host_claims(cloud, server_id) == {"cmp1": ("outgoing", 512),
                                             "cmp2": ("active", 2048)}
    until("both hosts report it", lambda: used_mb(cloud) == {
        "cmp1": before["cmp1"], "cmp2": before["cmp2"] + 2048})
    assert (cloud.home / "compute" / "cmp2" / "instances" / server_id / "disk").exists()
    assert [(m["status"], m["source_compute"], m["dest_compute"], m["migration_type"])
            for m in migrations(cloud, server_id)] == [("finished", "cmp1", "cmp2", "resize")]
    again = action(cloud, server_id, {"resize": {"flavorRef": "3"}})
    assert again.status_code == 409
    assert again.json()["conflictingRequest"]["message"] == \
        f"Cannot 'resize' instance {server_id} while it is in vm_state resized"
    result = cloud.cli("confirm-resize", server_id, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert server(cloud, server_id)["status"] == "ACTIVE"
    until("cmp1 let go", lambda: host_claims(cloud, server_id) == {"cmp2": ("active", 2048)})
    until("usage moved", lambda: used_mb(cloud) == {"cmp1": before["cmp1"] - 512,
                                                    "cmp2": before["cmp2"] + 2048})
    assert not (cloud.home / "compute" / "cmp1" / "instances" / server_id).exists()
    assert [m["status"] for m in migrations(cloud, server_id)] == ["confirmed"]
    actions = cloud.client().get(f"/compute/v2.1/servers/{server_id}/os-instance-actions")
    assert [a["action"] for a in actions["instanceActions"]] == \
        ["confirmResize", "resize", "create"]
    resize = next(a for a in actions["instanceActions"] if a["action"] == "resize")
    steps = cloud.client().get(f"/compute/v2.1/servers/{server_id}/os-instance-actions/"
                               f"{resize['request_id']}")["instanceAction"]["events"]
    assert sorted((e["event"], e["result"]) for e in steps) == [
        ("compute_finish_resize", "Success"), ("compute_prep_resize", "Success"),
        ("compute_resize_instance", "Success"), ("conductor_migrate_server", "Success")]


def test_a_delete_in_verify_resize_frees_both_hosts_and_audit_shows_the_move(
        cloud: Cloud) -> None:
    delete_all(cloud)
    server_id = on_host(cloud, "resized-then-deleted", "cmp1")
    assert cloud.cli("resize", server_id, "m1.small", "--wait").returncode == 0
    assert set(host_claims(cloud, server_id)) == {"cmp1", "cmp2"}
    audit = cloud.cli("audit", server_id, "--json")
    assert audit.returncode == 0, audit.stderr
    entries = json.loads(audit.stdout)
    resized = [e for e in entries if e["event_type"] == "InstanceResized"]
    assert [(e["vm_state"], e["host"], e["details"]["host"]) for e in resized] == \
        [("resized", "cmp2", "cmp2")]
    started = next(e for e in entries if e["event_type"] == "InstanceMigrationStarted")
    assert (started["details"]["old_flavor"], started["details"]["new_flavor"]) == \
        ("m1.tiny", "m1.small")
    admin = cloud.client()
    assert admin.http.delete(f"/compute/v2.1/servers/{server_id}",
                             headers={"X-Auth-Token": admin.token()}).status_code == 204
    wait_deleted(cloud, server_id)
    until("both hosts let go", lambda: not host_claims(cloud, server_id) and
          not leftovers(cloud, {server_id}))
    assert not any((cloud.home / "compute" / h / "instances" / server_id).exists()
                   for h in ("cmp1", "cmp2"))
    hosts = admin.get("/compute/v2.1/os-hosts")["hosts"]
    assert {"host_name": "cmp1", "service": "compute", "zone": "nova"} in hosts
    assert {h["service"] for h in hosts} >= {"compute", "scheduler", "conductor"}
    detail = admin.get("/compute/v2.1/os-hosts/cmp2")["host"]
    assert [r["resource"]["project"] for r in detail][:3] == \
        ["(total)", "(used_now)", "(used_max)"]


def test_bad_move_requests_are_refused_with_novas_words_and_publish_nothing(
        cloud: Cloud) -> None:
    delete_all(cloud)
    server_id = on_host(cloud, "not-to-move", "cmp2")
    seq = events(cloud, server_id)[-1]["seq"]
    demo = cloud.client("demo", "demo", "demo")
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"resize": {"flavorRef": "1"}}, 400, "When resizing, instances must change flavor!"),
        ({"resize": {"flavorRef": "99"}}, 400, "Flavor 99 could not be found."),
        ({"resize": {}}, 400, "Invalid input for field/attribute resize. Value: {}. "
                              "'flavorRef' is a required property"),
        ({"confirmResize": None}, 409,
         f"Cannot 'confirmResize' instance {server_id} while it is in vm_state active"),
        ({"unrescue": None}, 409,
         f"Cannot 'unrescue' instance {server_id} while it is in vm_state active"),
        ({"os-migrateLive": {"host": "cmp2", "block_migration": "auto"}}, 400,
         f"Unable to migrate instance ({server_id}) to current host (cmp2)."),
        ({"os-migrateLive": {"host": "cmp9", "block_migration": "auto"}}, 400,
         "Compute host cmp9 could not be found."),
        ({"evacuate": {"onSharedStorage": False}}, 400,
         "Compute service of cmp2 is still in use."),
        ({"migrate": {"host": "cmp1"}}, 400, "Invalid input for field/attribute migrate. "
         "Value: {'host': 'cmp1'}. {'host': 'cmp1'} is not of type 'null'"),
        ({"evacuate": {"onSharedStorage": True}}, 400,
         "Invalid state of instance files on shared storage"),
        ({"os-migrateLive": {"host": None, "block_migration": False}}, 400,
         "Shared storage live-migration requires either shared storage or boot-from-volume "
         "with no local disks."),
    ]
    for body, status, message in refusals:
        refused = action(cloud, server_id, body)
        assert refused.status_code == status, (body, refused.text)
        assert next(iter(refused.json().values()))["message"] == message
    forbidden = demo.http.post(f"/compute/v2.1/servers/{server_id}/action",
                               json={"migrate": None}, headers={"X-Auth-Token": demo.token()})
    assert forbidden.status_code == 404  # another project's server
    time.sleep(1)
    assert states_after(cloud, server_id, seq) == []


def test_revert_brings_the_server_back_and_cold_migrate_is_auto_confirmed(
        cloud: Cloud) -> None:
    delete_all(cloud)
    server_id = on_host(cloud, "to-revert", "cmp1")
    assert cloud.cli("stop", server_id, "--wait").returncode == 0
    assert cloud.cli("resize", server_id, "m1.small", "--wait").returncode == 0
    shown = server(cloud, server_id)
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("VERIFY_RESIZE", 4)
    seq = events(cloud, server_id)[-1]["seq"]
    result = cloud.cli("revert-resize", server_id, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert states_after(cloud, server_id, seq) == [
        ("InstanceResizeRevertRequested", "resized", "resize_reverting"),
        ("InstanceResizeReverted", "stopped", None)]  # it was stopped: it stays off
    shown = server(cloud, server_id)
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("SHUTOFF", "cmp1")
    until("cmp2 let go", lambda: host_claims(cloud, server_id) == {"cmp1": ("stopped", 512)})
    assert not (cloud.home / "compute" / "cmp2" / "instances" / server_id).exists()
    assert [m["status"] for m in migrations(cloud, server_id)] == ["reverted"]
    assert cloud.cli("start", server_id, "--wait").returncode == 0
    # a cold migrate (admin): the same flavor, the scheduler's other host, and nobody
    # answers: confirmed by the destination after resize_confirm_window
    result = cloud.cli("migrate", server_id, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert server(cloud, server_id)["OS-EXT-SRV-ATTR:host"] == "cmp2"
    until("auto-confirmed", lambda: server(cloud, server_id)["status"] == "ACTIVE",
          timeout=CONFIRM_WINDOW_S + 20)
    until("cmp1 let go", lambda: host_claims(cloud, server_id) == {"cmp2": ("active", 512)})
    assert [(m["migration_type"], m["status"]) for m in migrations(cloud, server_id)] == \
        [("migration", "confirmed"), ("resize", "reverted")]
    confirms = [e for e in events(cloud, server_id)
                if e["event_type"] == "InstanceResizeConfirmRequested"]
    assert [e["payload"]["automatic"] for e in confirms] == [True]


def test_live_migration_keeps_the_server_running_and_its_addresses(cloud: Cloud) -> None:
    delete_all(cloud)
    server_id = on_host(cloud, "to-live-migrate", "cmp1")
    addresses = server(cloud, server_id)["addresses"]
    seq = events(cloud, server_id)[-1]["seq"]
    result = cloud.cli("live-migrate", server_id, "--host", "cmp2", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    until("source cleaned", lambda: states_after(cloud, server_id, seq)[-1][0] ==
          "InstanceMigrationSourceCleaned")
    steps = states_after(cloud, server_id, seq)
    assert {vm for _, vm, _ in steps} == {"active"}  # vm_state unchanged throughout
    assert [(k, t) for k, _, t in steps] == [
        ("InstanceLiveMigrationRequested", "migrating"),
        ("InstanceMigrationStarted", "migrating"),
        ("InstanceMigrationScheduled", "migrating"),
        ("InstanceMigrationClaimed", "migrating"),
        ("InstanceLiveMigrationStarted", "migrating"),
        ("InstanceLiveMigrated", None),
        ("InstanceMigrationSourceCleaned", None)]
    shown = server(cloud, server_id)
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == \
        ("ACTIVE", "cmp2", addresses)
    until("source cleaned", lambda: host_claims(cloud, server_id) == {"cmp2": ("active", 512)})
    assert not (cloud.home / "compute" / "cmp1" / "instances" / server_id).exists()
    assert [m["status"] for m in migrations(cloud, server_id)] == ["completed"]
    assert action_names(cloud, server_id)[0] == ("live-migration", [
        "compute_live_migration", "compute_pre_live_migration",
        "conductor_live_migrate_instance"])
    stopped = on_host(cloud, "stopped-stays", "cmp1")
    assert cloud.cli("stop", stopped, "--wait").returncode == 0
    refused = action(cloud, stopped, {"os-migrateLive": {"host": None,
                                                         "block_migration": "auto"}})
    assert refused.status_code == 409
    assert refused.json()["conflictingRequest"]["message"] == \
        f"Cannot 'os-migrateLive' instance {stopped} while it is in vm_state stopped"


def test_rescue_boots_a_rescue_disk_first_and_unrescue_restores_the_guest(
        cloud: Cloud) -> None:
    delete_all(cloud)
    server_id = on_host(cloud, "to-rescue", "cmp2")
    answer = action(cloud, server_id, {"rescue": None})
    assert answer.status_code == 200 and len(answer.json()["adminPass"]) >= 8
    until("RESCUE", lambda: server(cloud, server_id)["status"] == "RESCUE")
    directory = cloud.home / "compute" / "cmp2" / "instances" / server_id
    xml = (directory / "libvirt.xml").read_text()
    assert xml.index("disk.rescue") < xml.index(f"{server_id}/disk'")  # rescue disk first
    assert [t for _, _, t in states_after(cloud, server_id, 0)][-2:] == ["rescuing", None]
    result = cloud.cli("unrescue", server_id, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert server(cloud, server_id)["status"] == "ACTIVE"
    assert not (directory / "disk.rescue").exists()
    assert "disk.rescue" not in (directory / "libvirt.xml").read_text()
    assert server(cloud, server_id)["OS-EXT-STS:power_state"] == 1
    assert action_names(cloud, server_id) == [
        ("unrescue", ["compute_unrescue_instance"]), ("rescue", ["compute_rescue_instance"]),
        ("create", ["compute__do_build_and_run_instance", "schedule_instances"])]


def test_evacuate_rebuilds_a_down_hosts_server_elsewhere_and_the_host_cleans_up_on_return(
        cloud: Cloud) -> None:
    delete_all(cloud)
    server_id = on_host(cloud, "to-evacuate", "cmp1")
    addresses = server(cloud, server_id)["addresses"]
    compute = pid_of(cloud, "compute-cmp1")
    os.kill(compute, signal.SIGSTOP)
    try:
        until("cmp1 down", lambda: services(cloud)[("nova-compute", "cmp1")]["state"]
              == "down", timeout=DOWN_TIME_S + 10)
        result = cloud.cli("evacuate", server_id, "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "adminPass" in result.stdout
        shown = server(cloud, server_id)
        assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == \
            ("ACTIVE", "cmp2", addresses)
        assert [t for _, _, t in states_after(cloud, server_id, 0)][-4:] == [
            "rebuilding", "rebuild_block_device_mapping", "rebuild_spawning", None]
        assert set(host_claims(cloud, server_id)) == {"cmp1", "cmp2"}  # cmp1 is not back
    finally:
        os.kill(compute, signal.SIGKILL)  # the host comes back as a new agent
    until("cmp1 back", lambda: services(cloud)[("nova-compute", "cmp1")]["state"] == "up",
          timeout=60)
    until("cmp1 destroyed its copy", lambda: host_claims(cloud, server_id) ==
          {"cmp2": ("active", 512)}, timeout=30)
    assert not (cloud.home / "compute" / "cmp1" / "instances" / server_id).exists()
    until("completed", lambda: [m["status"] for m in migrations(cloud, server_id)] ==
          ["completed"])
    assert action_names(cloud, server_id)[0] == ("evacuate", [
        "compute_rebuild_instance", "rebuild_server"])
    replay = cloud.cli("replay", "--verify")
    assert replay.returncode == 0, replay.stdout + replay.stderr


# -- service administration (kept last: the final test removes cmp1) --------------------
def put_service(cloud: Cloud, action: str, user: str = "admin",
                **body: str) -> httpx.Response:
    client = cloud.client(user, user, user) if user != "admin" else cloud.client()
    return client.http.put(f"/compute/v2.1/os-services/{action}", json=body,
                           headers={"X-Auth-Token": client.token()})


def test_a_disabled_host_gets_no_new_builds_and_bad_requests_change_nothing(
        cloud: Cloud) -> None:
    delete_all(cloud)
    refusals = [
        (put_service(cloud, "disable", "demo", host="cmp1", binary="nova-compute"), 403,
         "Policy doesn't allow os_compute_api:os-services:update to be performed."),
        (put_service(cloud, "disable", host="cmp1", binary="nova-scheduler"), 400,
         "Updating a nova-scheduler service is not supported. Only nova-compute services "
         "can be updated."),
        (put_service(cloud, "disable", host="cmp9", binary="nova-compute"), 404,
         "Could not find binary nova-compute on host cmp9."),
        (put_service(cloud, "disable-log-reason", host="cmp1", binary="nova-compute"), 400,
         "Missing disabled reason field"),
        (put_service(cloud, "reboot", host="cmp1", binary="nova-compute"), 404,
         "Unknown action"),
    ]
    for response, status, message in refusals:
        assert response.status_code == status, response.text
        assert next(iter(response.json().values()))["message"] == message
    assert services(cloud)[("nova-compute", "cmp1")]["status"] == "enabled"
    result = cloud.cli("service", "disable", "cmp1", "--reason", "maintenance")
    assert result.returncode == 0, result.stdout + result.stderr
    cmp1 = services(cloud)[("nova-compute", "cmp1")]
    assert (cmp1["status"], cmp1["disabled_reason"]) == ("disabled", "maintenance")
    ids = [boot(cloud, f"while-disabled-{i}") for i in range(3)]
    placed = cloud.wait_servers(ids)
    assert {s["OS-EXT-SRV-ATTR:host"] for s in placed.values()} == {"cmp2"}
    listed = cloud.cli("service", "list")
    assert "maintenance" in listed.stdout and "nova-conductor" in listed.stdout
    assert cloud.cli("service", "enable", "cmp1").returncode == 0
    cmp1 = services(cloud)[("nova-compute", "cmp1")]
    assert (cmp1["status"], cmp1["disabled_reason"]) == ("enabled", None)


def test_a_host_is_deleted_only_when_empty_and_then_gone_everywhere(cloud: Cloud) -> None:
    admin = cloud.client()
    delete_all(cloud)  # room on cmp2 for what follows
    on_cmp1 = boot(cloud, "pins-cmp1", availability_zone="nova:cmp1")
    cloud.wait_servers([on_cmp1])
    refused = cloud.cli("service", "delete", "cmp1")
    assert refused.returncode == 1
    assert "Unable to delete compute service that is hosting instances." in refused.stderr
    assert ("nova-compute", "cmp1") in services(cloud)
    delete_all(cloud, "cmp1")
    result = cloud.cli("service", "delete", "cmp1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("nova-compute", "cmp1") not in services(cloud)
    time.sleep(2)  # the agent of cmp1 still runs and reports: it stays gone
    assert ("nova-compute", "cmp1") not in services(cloud)
    nodes = admin.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]
    assert [h["service"]["host"] for h in nodes] == ["cmp2"]
    ids = [boot(cloud, f"after-removal-{i}") for i in range(3)]
    assert {s["OS-EXT-SRV-ATTR:host"] for s in cloud.wait_servers(ids).values()} == {"cmp2"}
    events = cloud.topic_events(f"{cloud.settings.topic_prefix}.hosts")
    assert [e.payload["binary"] for e in events if e.event_type == "ServiceDeleted"] == \
        ["nova-compute"]  # recorded as an event, never a hand-written DELETE
    replay = cloud.cli("replay", "--verify")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_numbers_in_paths_and_headers_are_ascii_digits_or_a_400(cloud: Cloud) -> None:
    """str.isdigit() is true of '³', which int() refuses: such input is a 400, not a 500
    (the API fuzz found it on DELETE /os-services/{id})."""
    token = {"X-Auth-Token": cloud.client().token()}
    with cloud.http() as http:
        for bad in ("³", "١٢", "abc"):
            answer = http.delete(f"/compute/v2.1/os-services/{bad}", headers=token)
            assert answer.status_code == 400, (bad, answer.text)
            assert f"Invalid ID {bad} passed" in answer.text
        answer = http.post("/compute/v2.1/flavors", headers=token, json={"flavor": {
            "name": "sup", "ram": 64, "vcpus": 1, "disk": 1, "swap": "\u00b3"}})
        assert answer.status_code == 400, answer.text
        assert "Invalid input for field/attribute swap" in answer.text
