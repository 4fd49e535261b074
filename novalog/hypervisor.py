"""`novalog hypervisor setup`: a real QEMU (TCG) behind libvirt on this machine.

What ../shared/REAL_HYPERVISOR.md verified, as one idempotent command: Debian's
packages, the `libvirt-qemu` user libvirtd insists on, QEMU run as root (a define
as libvirt-qemu re-probes QEMU for 40 s), virtlogd then libvirtd started without
systemd, and a throw-away domain defined, started and destroyed as the proof. Each
step says whether it changed anything; a second run changes nothing and says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("qemu-system-x86", "libvirt-daemon", "libvirt-daemon-driver-qemu",
            "libvirt-clients", "busybox-static", "cpio")
SYSTEM_URI = "qemu:///system"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
CHECK_DOMAIN = "novalog-setup-check"


class SetupError(Exception):
    """What stops the setup, said so that an operator knows what to do."""


@dataclass
class SetupReport:
    steps: list[tuple[str, bool]] = field(default_factory=list)  # (what, changed)

    def step(self, what: str, changed: bool) -> None:
        self.steps.append((what, changed))

    @property
    def changed(self) -> bool:
        return any(changed for _what, changed in self.steps)


def missing_packages() -> list[str]:
    out = []
    for package in PACKAGES:
        found = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                               capture_output=True, text=True)
        if "install ok installed" not in found.stdout:
            out.append(package)
    return out


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SetupError(f"{what} failed (exit {done.returncode}): {' / '.join(tail)}")


def _install(report: SetupReport, say: Callable[[str], None]) -> None:
    missing = missing_packages()
    if not missing:
        report.step(f"Debian packages present ({', '.join(PACKAGES)})", False)
        return
    if os.geteuid() != 0:
        raise SetupError(f"packages missing: {' '.join(missing)}; as root run "
                         f"`apt-get install --no-install-recommends {' '.join(missing)}` "
                         "(or run this command as root)")
    say(f"installing {' '.join(missing)} (apt-get, ~20 s)")
    _run(["apt-get", "update", "-qq"], "apt-get update")
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
         "apt-get install")
    report.step(f"installed {' '.join(missing)}", True)


def _system_user(report: SetupReport) -> None:
    """libvirtd refuses to start without it; Debian's libvirt-daemon-system would bring it
    with polkit and iptables, which a control plane's hypervisor does not need."""
    found = subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True)
    if found.returncode == 0:
        report.step("user libvirt-qemu exists", False)
        return
    _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
          "/var/lib/libvirt", "--shell", "/usr/sbin/nologin", "libvirt-qemu"], "useradd")
    report.step("created user libvirt-qemu", True)


def _qemu_as_root(report: SetupReport) -> None:
    text = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
    wanted = {"user": "root", "group": "root"}
    current = {k: v for k, v in re.findall(r'(?m)^\s*(user|group)\s*=\s*"([^"]*)"', text)}
    if all(current.get(k) == v for k, v in wanted.items()):
        report.step(f"{QEMU_CONF}: QEMU runs as root", False)
        return
    kept = [line for line in text.splitlines()
            if not re.match(r'^\s*(user|group)\s*=', line)]
    QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
    QEMU_CONF.write_text("\n".join([*kept, "# novalog hypervisor setup: QEMU as root "
                                    "(as libvirt-qemu every define re-probes QEMU)",
                                    'user = "root"', 'group = "root"', ""]))
    report.step(f"{QEMU_CONF}: QEMU runs as root", True)


def _answers(socket: Path) -> bool:
    import socket as sockets

    if not socket.exists():
        return False
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(socket))
        except OSError:
            return False
    return True


def _daemon(report: SetupReport, name: str, socket: Path, timeout_s: float = 30) -> None:
    if _answers(socket):
        report.step(f"{name} is running", False)
        return
    binary = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(binary).exists():
        raise SetupError(f"{name} is not installed (package libvirt-daemon)")
    Path("/var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    if Path("/run/systemd/system").exists():
        _run(["systemctl", "start", name], f"systemctl start {name}")
    else:
        _run([binary, "--daemon"], f"{name} --daemon")
    deadline = time.monotonic() + timeout_s
    while not _answers(socket):
        if time.monotonic() > deadline:
            raise SetupError(f"{name} did not answer on {socket} within {timeout_s:.0f} s; "
                             f"see /var/log/libvirt or run `{name} --verbose` by hand")
        time.sleep(0.2)
    report.step(f"started {name}", True)


def check_domain_xml(domain_uuid: str) -> str:
    """A guest with no disk: SeaBIOS finds nothing to boot and waits, which is enough to
    prove that libvirt can define, start and destroy a QEMU domain here."""
    return (f"<domain type='qemu'><name>{CHECK_DOMAIN}</name><uuid>{domain_uuid}</uuid>"
            "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
            "<features><acpi/></features><devices><memballoon model='none'/></devices>"
            "</domain>")


def check(uri: str) -> str:
    """Define, start, destroy and undefine a throw-away domain; libvirt's and QEMU's
    versions for the report."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raised, not printed too
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise SetupError(f"cannot open {uri}: {exc}") from None
    try:
        try:  # a check interrupted before leaves its domain behind
            stale = conn.lookupByName(CHECK_DOMAIN)
            if stale.isActive():
                stale.destroy()
            stale.undefine()
        except libvirt.libvirtError:
            pass
        started = time.monotonic()
        try:
            dom = conn.defineXML(check_domain_xml(str(uuid.uuid4())))
            try:
                dom.create()
                dom.destroy()
            finally:
                dom.undefine()
        except libvirt.libvirtError as exc:
            raise SetupError(f"a throw-away QEMU domain could not run on {uri}: {exc}"
                             ) from None
        took = time.monotonic() - started

        def version(number: int) -> str:
            return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"

        return (f"{uri}: libvirt {version(conn.getLibVersion())}, QEMU "
                f"{version(conn.getVersion())}, a throw-away domain defined, started and "
                f"destroyed in {took:.1f} s")
    finally:
        conn.close()


def setup(uri: str, say: Callable[[str], None]) -> tuple[SetupReport, str]:
    """Everything a QEMU compute host needs on this machine; idempotent."""
    report = SetupReport()
    _install(report, say)
    if uri == SYSTEM_URI:
        if os.geteuid() != 0:
            raise SetupError(f"{SYSTEM_URI} needs root to prepare (user, qemu.conf, "
                             "daemons); run as root, or use "
                             "--uri qemu:///session as a normal user")
        _system_user(report)
        _qemu_as_root(report)
        _daemon(report, "virtlogd", VIRTLOGD_SOCKET)
        _daemon(report, "libvirtd", LIBVIRT_SOCKET)
    elif not uri.startswith("qemu:///session"):
        raise SetupError(f"{uri}: novalog prepares qemu:///system (as root) or "
                         "qemu:///session (libvirt starts its own daemon)")
    return report, check(uri)
