"""A real guest through the normal API (issue 15): QEMU (TCG) behind libvirt as compute
host qemu1, next to a simulated one.

The test runs what the README's "Real hypervisor" section tells a user to run:
`novalog hypervisor setup` (twice: the second changes nothing), `novalog up
--qemu-hosts 1`, `novalog image build-tiny`, then `novalog boot --image tiny`. The
guest's own console output is the proof, read back through os-getConsoleOutput (the
stock client and novalog's verb): its marker line names the server's uuid, again
after each reboot and start. Libvirt and the process table are asked directly
whether the domain and its QEMU process are gone after the delete.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import libvirt
import psutil
import pytest

from consumers.compute.driver import destroy_deployment
from novalog.client import ApiFailure
from producers.tiny_image import MARKER
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud
from tests.e2e.test_openstack_clients import osc, run, until_status

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

URI = "qemu:///system"


def novalog(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The command, its output's lines joined (rich wraps them at 80 columns)."""
    done = subprocess.run([sys.executable, "-m", "novalog", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if args[0] != "console-log":
        done.stdout = " ".join(done.stdout.split())
    return done


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    first = novalog("hypervisor", "setup")
    assert first.returncode == 0, first.stdout + first.stderr
    again = novalog("hypervisor", "setup")
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout
    with running_cloud(infra, tmp_path_factory.mktemp("qemu") / "home", hosts=1,
                       up_args=("--qemu-hosts", "1")) as c:
        yield c
    destroy_deployment(URI, c.settings.topic_prefix)  # a failed test's guests


def console(cloud: Cloud, server_id: str) -> str:
    return str(cloud.client().request("POST", f"/compute/v2.1/servers/{server_id}/action",
                                      json={"os-getConsoleOutput": {"length": None}})["output"])


def markers(cloud: Cloud, server_id: str, count: int, timeout: float = 90) -> list[str]:
    """The guest's marker lines naming this server, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in console(cloud, server_id).splitlines()
                 if line.startswith(f"{MARKER} uuid={server_id} ")]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, console(cloud, server_id)
        time.sleep(0.5)


def domain_of(server_id: str) -> libvirt.virDomain | None:
    conn = libvirt.open(URI)
    try:
        return conn.lookupByUUIDString(server_id)
    except libvirt.libvirtError:
        return None


def qemu_processes(server_id: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if "qemu" in (p.info["name"] or "") and server_id in " ".join(p.info["cmdline"] or [])]


def test_a_real_guest_boots_prints_its_marker_reboots_and_is_gone_after_delete(
        cloud: Cloud) -> None:
    built = novalog("image", "build-tiny", env=cloud.env)
    assert built.returncode == 0 and "registered" in built.stdout, built.stdout + built.stderr
    again = novalog("image", "build-tiny", env=cloud.env)
    assert "nothing changed" in again.stdout, again.stdout
    tiny = osc(cloud, "image", "show", "tiny")
    assert (tiny["disk_format"], tiny["container_format"]) == ("ami", "ami")
    props = tiny["properties"]
    for name, fmt in (("tiny-kernel", "aki"), ("tiny-ramdisk", "ari")):
        part = osc(cloud, "image", "show", name)
        assert part["disk_format"] == fmt and part["status"] == "active"
        assert props["kernel_id" if fmt == "aki" else "ramdisk_id"] == part["id"]

    booted = novalog("boot", "guest one", "--image", "tiny", "--flavor", "m1.tiny", "--wait",
                     env=cloud.env)
    assert booted.returncode == 0, booted.stdout + booted.stderr
    server = osc(cloud, "server", "show", "guest one")
    uuid = server["id"]
    assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] == "qemu1"
    dom = domain_of(uuid)
    assert dom is not None and dom.isActive() and qemu_processes(uuid)
    assert "<kernel>" in dom.XMLDesc() and "type='qemu'" in dom.XMLDesc()
    first = markers(cloud, uuid, 1)
    assert "name=guest one " in first[0] and first[0].endswith("disks=vda")
    shown = run(cloud, "openstack", "console", "log", "show", "--lines", "5", uuid).stdout
    assert f"{MARKER} uuid={uuid}" in shown
    verb = novalog("console-log", uuid, "--lines", "20", env=cloud.env).stdout
    assert f"{MARKER} uuid={uuid}" in verb

    # a volume hot-plugged into the running guest; it sees it from its next boot
    run(cloud, "openstack", "volume", "create", "--size", "1", "data")
    for _ in range(100):
        if osc(cloud, "volume", "show", "data")["status"] == "available":
            break
        time.sleep(0.3)
    run(cloud, "openstack", "server", "add", "volume", uuid, "data")
    for _ in range(100):
        if osc(cloud, "volume", "show", "data")["status"] == "in-use":
            break
        time.sleep(0.3)
    assert "vdb" in dom.XMLDesc()  # the live definition: QEMU took the disk at once

    run(cloud, "openstack", "server", "reboot", "--soft", "--wait", uuid)  # ACPI, then start
    second = markers(cloud, uuid, 2)
    assert second[1].endswith("disks=vda vdb"), second
    assert "power button: powering off" in console(cloud, uuid)
    run(cloud, "openstack", "server", "reboot", "--hard", "--wait", uuid)
    markers(cloud, uuid, 3)

    run(cloud, "openstack", "server", "stop", uuid)
    until_status(cloud, uuid, "SHUTOFF")
    assert not dom.isActive() and not qemu_processes(uuid)
    run(cloud, "openstack", "server", "start", uuid)
    until_status(cloud, uuid, "ACTIVE")
    markers(cloud, uuid, 4)

    dom.shutdown()  # the guest powers itself off (its power button): seen as stopped
    until_status(cloud, uuid, "SHUTOFF", timeout=60)
    actions = [e["event_type"] for e in cloud.client().get(
        f"/novalog/v1/servers/{uuid}/events")["events"]]
    assert actions[-1] == "InstanceStopped"

    run(cloud, "openstack", "server", "remove", "volume", uuid, "data")
    run(cloud, "openstack", "server", "delete", "--wait", uuid)
    assert domain_of(uuid) is None
    deadline = time.monotonic() + 10
    while qemu_processes(uuid):
        assert time.monotonic() < deadline, qemu_processes(uuid)
        time.sleep(0.2)


def test_console_output_refuses_bad_input_and_other_projects(cloud: Cloud) -> None:
    run(cloud, "openstack", "server", "create", "--image", "cirros", "--flavor", "m1.tiny",
        "--network", "private", "--availability-zone", "nova:cmp1", "--wait", "quiet")
    server_id = str(cloud.client().find("server", "quiet")["id"])
    path = f"/compute/v2.1/servers/{server_id}/action"
    for body, message in (({"length": "abc"}, "os-getConsoleOutput"),
                          ({"length": -2}, "less than the minimum of -1"),
                          ({"lines": 1}, "os-getConsoleOutput")):
        with pytest.raises(ApiFailure) as bad:
            cloud.client().request("POST", path, json={"os-getConsoleOutput": body})
        assert bad.value.status == 400 and message in bad.value.message
    with pytest.raises(ApiFailure) as hidden:
        cloud.client("demo", project="demo").request(
            "POST", path, json={"os-getConsoleOutput": {}})
    assert hidden.value.status == 404
    # the simulated host's guest writes nothing: an empty log, not an error
    assert cloud.client().request("POST", path, json={"os-getConsoleOutput": {
        "length": "-1"}}) == {"output": ""}
    with pytest.raises(ApiFailure) as mixed:
        cloud.client().request("POST", "/image/v2/images", json={
            "name": "k", "disk_format": "aki", "container_format": "bare"})
    assert mixed.value.status == 400 and "must match" in mixed.value.message


def test_image_placement_keeps_tiny_on_qemu_and_cirros_anywhere(cloud: Cloud) -> None:
    hosts: dict[str, Any] = {h["Hypervisor Hostname"]: h for h in osc(
        cloud, "hypervisor", "list", "--long")}
    assert hosts["qemu1"]["Hypervisor Type"] == "QEMU"
    assert hosts["cmp1"]["Hypervisor Type"] == "TEST"
    assert hosts["qemu1"]["vCPUs"] == psutil.cpu_count()
