"""A stack of the bench's own, and a sampler of what every process of it costs.

The bench never measures a stack someone else is using: it starts one in a
temporary home on free ports (embedded broker and Postgres, or the configured
ones under a topic prefix and schema of its own), sized so that capacity and
quota are never what a scenario measures, and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import psycopg

from novalog.client import NovalogClient
from novalog.migrations import drop_schemas
from novalog.process import free_port
from novalog.roles import plan
from novalog.settings import Settings
from novalog.stack import Supervisor, prepare_cloud

# Per simulated host: room for any scenario's live servers (quota and capacity are
# not what the bench measures; NoValidHost would end a boot early and look fast).
HOST_ENV = {"NOVALOG_COMPUTE_VCPUS": "256", "NOVALOG_COMPUTE_MEMORY_MB": "1048576",
            "NOVALOG_COMPUTE_DISK_GB": "1000000", "NOVALOG_PRIVATE_CIDR": "10.0.0.0/16"}
HOSTS_PER_FLEET = 100


def bench_fleets(hosts: int) -> int:
    """Agent processes for the bench's simulated hosts, unless NOVALOG_COMPUTE_FLEETS says
    (0: one per host, as `novalog up` runs them): fleets of up to 100 hosts. Measured on
    2 cores, 10 hosts in one fleet: 31.2 boots/s and 56 CPU ms per boot in all, against
    25.5 and 72 with a process per host (README "Figures")."""
    return -(-hosts // HOSTS_PER_FLEET)


@dataclass
class Sample:
    at: float  # seconds since the sampler started
    rss_mb: dict[str, float]
    cpu_s: dict[str, float]


def _usage(procs: list[psutil.Process]) -> tuple[float, float]:
    """(CPU seconds, RSS MB) summed; reaped children are in the children_* times."""
    cpu, rss = 0.0, 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += p.memory_info().rss / 1e6
    return cpu, rss


def _descendants(roots: list[int]) -> dict[int, list[psutil.Process]]:
    """Each root's live descendants (Postgres backends, qemu-img runs), from one pass over
    the process table: psutil's children() would scan it once per process."""
    by_parent: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid"]):
        by_parent.setdefault(proc.info["ppid"], []).append(proc)
    out = {}
    for root in roots:
        found, todo = [], [root]
        while todo:
            for child in by_parent.get(todo.pop(), []):
                found.append(child)
                todo.append(child.pid)
        out[root] = found
    return out


class Sampler:
    """CPU time and memory of each named process, every `interval` seconds, in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5,
                 alone: tuple[str, ...] = ()) -> None:
        """`alone`: processes measured without their children (the bench client, whose
        children are the stack itself)."""
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.alone = alone
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.started = time.perf_counter()

    def sample(self) -> Sample:
        rss, cpu = {}, {}
        family = _descendants([p.pid for n, p in self.procs.items() if n not in self.alone])
        for name, proc in self.procs.items():
            cpu[name], rss[name] = _usage([proc, *family.get(proc.pid, [])])
        s = Sample(round(time.perf_counter() - self.started, 3), rss, cpu)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self.started = time.perf_counter()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def cpu_used(self) -> dict[str, float]:
        """CPU seconds per process between the first and the last sample."""
        first, last = self.samples[0].cpu_s, self.samples[-1].cpu_s
        return {name: round(last[name] - first[name], 3) for name in first}

    def peak_rss(self) -> dict[str, float]:
        return {name: round(max(s.rss_mb[name] for s in self.samples), 1)
                for name in self.procs}


@dataclass
class BenchStack:
    """`novalog up` in-process, for one scenario."""

    hosts: int = 10
    replicas: int = 1
    qemu_hosts: int = 0  # real QEMU hosts beside the simulated ones (serial --qemu)
    roles: bool = True  # False: only the broker and Postgres (the replay bench)
    base: Settings = field(default_factory=Settings.from_env)
    settings: Settings = field(init=False)
    supervisor: Supervisor = field(init=False)
    _home: Path = field(init=False)
    _watch: threading.Thread | None = field(init=False, default=None)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self._home = Path(tempfile.mkdtemp(prefix="novalog-bench-"))
        self.settings = replace(
            self.base, home=self._home, topic_prefix=f"bench-{tag}", db_schema=f"bench_{tag}",
            broker_port=free_port(), controller_port=free_port(), postgres_port=free_port(),
            api_port=free_port(), private_cidr=HOST_ENV["NOVALOG_PRIVATE_CIDR"],
            api_host="127.0.0.1", compute_fleets=self.base.compute_fleets
            if "NOVALOG_COMPUTE_FLEETS" in os.environ else bench_fleets(self.hosts))

    def __enter__(self) -> BenchStack:
        os.environ.update(HOST_ENV)  # inherited by the compute agents and the bootstrap
        roles = plan(self.settings, self.hosts, self.replicas, self.qemu_hosts) \
            if self.roles else []
        self.supervisor = Supervisor(
            self.settings, roles,
            prepare_cloud(self.hosts + self.qemu_hosts) if self.roles else None)
        self.supervisor.start()
        self.settings = self.supervisor.settings  # now with the broker and database
        self._watch = threading.Thread(target=self._watch_loop, name="supervisor",
                                       daemon=True)
        self._watch.start()
        return self

    def _watch_loop(self) -> None:
        while not self._stop.wait(0.2):
            self.supervisor.watch_once()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
        self.supervisor.shutdown()
        if self.qemu_hosts:  # real guests outlive their agents: the bench's go with it
            import libvirt

            from consumers.compute.driver import destroy_deployment

            try:
                destroy_deployment("qemu:///system", self.settings.topic_prefix)
            except libvirt.libvirtError as exc:
                logging.getLogger(__name__).warning("bench guests not destroyed: %s", exc)
        if self.base.database_url:  # a configured database keeps nothing of the bench
            drop_schemas(self.settings)
        shutil.rmtree(self._home, ignore_errors=True)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def client(self, **kwargs: Any) -> NovalogClient:
        return NovalogClient(self.api_url, "admin", os.environ.get(
            "NOVALOG_ADMIN_PASSWORD", "admin"), "admin", **kwargs)

    def pids(self) -> dict[str, int]:
        return {c.spec.name: c.proc.pid for c in self.supervisor.children}

    def versions(self) -> dict[str, str]:
        """What the broker and the database say they are."""
        with psycopg.connect(self.settings.require_database_url()) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        postgres = f"PostgreSQL {row[0] if row else '?'}"
        if self.base.kafka_bootstrap_servers:
            broker = f"external ({self.base.kafka_bootstrap_servers})"
        else:
            versions = [c.spec.version for c in self.supervisor.children
                        if c.spec.kind == "broker"]
            broker = f"embedded {versions[0] if versions else '?'}"
        return {"broker": broker, "postgres": postgres}


class Profiler:
    """py-spy sampling every role while a scenario runs (collapsed stacks, one file per
    role), then a summary of where each role's CPU went."""

    def __init__(self, pids: dict[str, int], directory: Path, rate: int = 50) -> None:
        self.pids, self.directory, self.rate = pids, directory, rate
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Profiler:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self.procs[name] = subprocess.Popen(
                [spy, "record", "-p", str(pid), "-f", "raw", "-r", str(self.rate),
                 "--nonblocking", "-o", str(self.directory / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *_exc: object) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def summary(self, top: int = 8) -> dict[str, list[tuple[str, float]]]:
        """Per role: the functions (own frames, by file:function) holding the most
        samples, as a share of that role's samples."""
        out: dict[str, list[tuple[str, float]]] = {}
        for name in self.pids:
            path = self.directory / f"{name}.txt"
            if not path.exists():
                continue
            counts: dict[str, int] = {}
            total = 0
            for line in path.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if not n.isdigit():
                    continue
                total += int(n)
                leaf = _leaf(stack)
                counts[leaf] = counts.get(leaf, 0) + int(n)
            ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            out[name] = [(k, round(100 * v / max(total, 1), 1)) for k, v in ranked]
        return out


def _leaf(stack: str) -> str:
    """The innermost frame worth naming: novalog's own, else the library it called."""
    frames = stack.split(";")
    own = [f for f in frames if any(f"({d}/" in f for d in (
        "novalog", "consumers", "producers", "projections", "schemas"))]
    leaf = frames[-1]
    name = leaf.split(" (")[0]
    where = leaf.split(" (")[-1].split(":")[0].rstrip(")") if " (" in leaf else "?"
    lib = where.split("/")[0]
    caller = own[-1].split(" (")[0] if own else "-"
    return f"{caller} -> {lib}:{name}"
