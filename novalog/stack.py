"""The dev stack: embedded broker + embedded Postgres + every role, supervised.

`novalog up` runs a Supervisor in the foreground (or detached). It starts the
embedded Apache Kafka node (or Tansu, see `novalog.embedded`) and Postgres from
the pgserver wheel unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL point elsewhere,
then each role as its own OS process, restarts a role that dies (with back-off),
and on SIGINT / SIGTERM stops the roles, then the broker, then Postgres. Every
child also gets PR_SET_PDEATHSIG, so even a SIGKILLed supervisor leaves no
orphans. The state file `$NOVALOG_HOME/stack.json` is what `status` and `down`
read. The embedded data (`$NOVALOG_HOME/kafka`, `pgdata`) outlives a stop;
`novalog reset` wipes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import psycopg

from novalog import embedded
from novalog.db import DatabaseUnavailable, check_database, redact
from novalog.embedded.postgres import embedded_database_url, prepare_postgres
from novalog.kafka import (
    BrokerUnavailable,
    Topics,
    check_broker,
    cluster_id,
    ensure_topics,
    wait_for_brokers,
)
from novalog.migrations import bind_log, drop_schemas, log_binding, migrate, reset
from novalog.process import (
    Child,
    ProcessSpec,
    StackError,
    port_free,
    spawn,
    stop_child,
    tail,
    tcp_answers,
    wait_until,
)
from novalog.roles import RoleInstance
from novalog.running import read_state, state_path
from novalog.settings import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX_S = 30.0


def role_spec(settings: Settings, instance: RoleInstance, logs: Path) -> ProcessSpec:
    return ProcessSpec(
        name=instance.name, kind="role",
        argv=[sys.executable, "-m", "novalog", "run", instance.role],
        address=instance.address or "-", log_path=logs / f"{instance.name}.log",
        env={**settings.as_env(), **dict(instance.env)},
    )


def _db_ready(url: str) -> bool:
    try:
        check_database(url, timeout=1)
    except DatabaseUnavailable:
        return False
    return True


class Supervisor:
    """Owns the stack's processes for as long as `novalog up` runs."""

    def __init__(self, settings: Settings, roles: list[RoleInstance],
                 between_phases: Callable[[Settings], None] | None = None) -> None:
        """Phase 0 roles start first, then `between_phases` runs, then phase 1 roles."""
        self.settings = settings
        self.roles = roles
        self.between_phases = between_phases
        self.children: list[Child] = []
        self.logs = settings.home / "logs"
        self.started_at = time.time()
        self.ready = False
        self.ready_seconds: dict[str, float] = {}  # spawn -> ready of the embedded infra
        self.broker_kind = embedded.EXTERNAL if settings.kafka_bootstrap_servers else \
            (settings.broker or embedded.KAFKA)

    # -- start -------------------------------------------------------------------------
    def preflight(self) -> None:
        """Refuse to start over a running stack or on taken ports, before touching anything."""
        existing = read_state(self.settings)
        if existing and psutil.pid_exists(existing["supervisor_pid"]):
            raise StackError(f"novalog is already running (supervisor pid "
                             f"{existing['supervisor_pid']}): `novalog down` first.")
        s = self.settings
        ports = [("API", s.api_host, s.api_port, "NOVALOG_API_PORT")] \
            if any(r.role == "api" for r in self.roles) else []
        if self.broker_kind != embedded.EXTERNAL:
            ports.append(("embedded broker", "127.0.0.1", s.broker_port, "NOVALOG_BROKER_PORT"))
        if self.broker_kind == embedded.KAFKA:
            ports.append(("embedded broker's controller", "127.0.0.1", s.controller_port,
                          "NOVALOG_CONTROLLER_PORT"))
        if not s.database_url:
            ports.append(("embedded Postgres", "127.0.0.1", s.postgres_port,
                          "NOVALOG_POSTGRES_PORT"))
        for what, host, port, var in ports:
            if not port_free(host, port):
                raise StackError(f"port {port} on {host} is taken, so the {what} cannot listen "
                                 f"there. Stop what uses it, or choose another port with {var}.")

    def start(self) -> None:
        """Bring everything up in dependency order; on any failure, stop what was started."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.broker_kind = embedded.choose_broker(self.settings)
        self.preflight()
        self.write_state()  # "still starting": a first fetch of the jars can take minutes
        broker = None
        try:
            if self.broker_kind != embedded.EXTERNAL:  # jars and storage before any process
                broker = embedded.prepare_broker(self.settings, self.broker_kind, self.logs)
            self._start_infrastructure(broker)
            for phase in (0, 1):
                if phase == 1 and self.between_phases is not None:
                    self.between_phases(self.settings)
                for instance in self.roles:
                    if instance.phase == phase:
                        self._start_role(instance)
            self.ready = True
            self.write_state()
        except BaseException:
            self.shutdown()
            raise

    def _start_infrastructure(self, broker: ProcessSpec | None) -> None:
        s = self.settings
        bootstrap = s.kafka_bootstrap_servers
        started = time.perf_counter()
        if broker is not None:
            child = self._spawn(broker)
            bootstrap = broker.address
            wait_until(lambda: tcp_answers("127.0.0.1", s.broker_port), child, "broker", 60)
        assert bootstrap is not None
        try:
            check_broker(bootstrap, timeout=10)
            if broker is not None:
                wait_for_brokers(bootstrap, 1, timeout=60)
                self.ready_seconds["broker"] = time.perf_counter() - started
        except BrokerUnavailable as exc:
            raise StackError(str(exc)) from None
        database_url = s.database_url
        if database_url is None:
            started = time.perf_counter()
            child = self._spawn(prepare_postgres(s, self.logs))
            database_url = embedded_database_url(s)
            url = database_url
            wait_until(lambda: _db_ready(url), child, "Postgres", 60)
            self.ready_seconds["postgres"] = time.perf_counter() - started
        try:
            check_database(database_url)
        except DatabaseUnavailable as exc:
            raise StackError(str(exc)) from None
        kind = self.broker_kind if self.broker_kind != embedded.EXTERNAL else s.broker
        self.settings = replace(s.with_infrastructure(bootstrap, database_url), broker=kind)
        ensure_topics(self.settings, Topics(s.topic_prefix).core())
        self._check_log_binding(bootstrap)
        self.write_state()

    def _check_log_binding(self, bootstrap: str) -> None:
        """The tables of schema S fold one log: refuse to run them on another (a wiped or
        switched broker), which would skip or re-apply events by stale offsets."""
        bound = log_binding(self.settings)
        if self.broker_kind == embedded.TANSU:
            if bound is not None and bound[0] != embedded.TANSU:
                raise StackError(f"schema {self.settings.db_schema} holds the folds of the "
                                 f"{bound[0]} log {bound[1]}; starting on Tansu would wipe "
                                 "them: use NOVALOG_BROKER=kafka, or `novalog reset` first.")
            reset(self.settings)  # Tansu starts empty: so must the folds of its log
            bind_log(self.settings, embedded.TANSU, "tansu")
            return
        migrate(self.settings)
        here = (self.broker_kind, cluster_id(bootstrap) or bootstrap)
        bound = bind_log(self.settings, *here)
        if bound[1] != here[1]:
            raise StackError(
                f"schema {self.settings.db_schema} holds the folds of Kafka cluster {bound[1]}, "
                f"but the broker at {bootstrap} is cluster {here[1]}: offsets and projections "
                "would not match its log. `novalog reset` wipes the embedded data (and the "
                "schema); with a database of your own, drop the schema or choose another "
                "NOVALOG_DB_SCHEMA.")

    def _start_role(self, instance: RoleInstance) -> None:
        child = self._spawn(role_spec(self.settings, instance, self.logs))
        if instance.address:
            host, _, port = instance.address.rpartition(":")
            wait_until(lambda: tcp_answers(host, int(port)), child, f"role {instance.name}", 60)

    def _spawn(self, spec: ProcessSpec) -> Child:
        log.info("starting %s: %s", spec.name, " ".join(spec.argv))
        child = spawn(spec)
        self.children.append(child)
        self.write_state()
        return child

    # -- run ---------------------------------------------------------------------------
    def watch_once(self) -> None:
        """Restart dead roles with exponential back-off; a dead broker or database is fatal."""
        now = time.monotonic()
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                continue
            if child.spec.kind != "role":
                raise StackError(f"{child.spec.name} exited with code {code}; the embedded "
                                 f"stack cannot go on. Last lines of {child.spec.log_path}:\n"
                                 f"{tail(child.spec.log_path)}")
            if child.next_restart is None:
                delay = min(2.0 ** child.restarts, RESTART_BACKOFF_MAX_S)
                child.next_restart = now + delay
                log.warning("role %s exited with code %s; restarting in %.0fs",
                            child.spec.name, code, delay)
            elif now >= child.next_restart:
                if child.log_file is not None:
                    child.log_file.close()
                fresh = spawn(child.spec)
                child.proc, child.log_file = fresh.proc, fresh.log_file
                child.restarts += 1
                child.next_restart = None
                self.write_state()

    def serve(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            self.watch_once()
            time.sleep(0.2)

    # -- stop --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Roles first (they flush and commit), then the broker, then Postgres."""
        order = {"role": 0, "broker": 1, "postgres": 2}
        for child in sorted(self.children, key=lambda c: order[c.spec.kind]):
            stop_child(child)
        self.children = []
        with contextlib.suppress(FileNotFoundError):
            state_path(self.settings).unlink()

    # -- state -------------------------------------------------------------------------
    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "started_at": self.started_at,
            "ready": self.ready,
            "kafka_bootstrap_servers": self.settings.kafka_bootstrap_servers,
            "broker": self.broker_kind,
            "database_url": redact(self.settings.database_url or ""),
            "components": [
                asdict(ComponentState(
                    name=c.spec.name, kind=c.spec.kind, pid=c.proc.pid,
                    address=c.spec.address, log=str(c.spec.log_path), restarts=c.restarts,
                    version=c.spec.version,
                ))
                for c in self.children
            ],
        }
        path = state_path(self.settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


@dataclass
class ComponentState:
    name: str
    kind: str
    pid: int
    address: str
    log: str
    restarts: int = 0
    version: str = ""


def component_up(component: dict[str, Any]) -> bool:
    """Alive process and, when it has a TCP address, an answering port."""
    try:
        proc = psutil.Process(component["pid"])
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return False
    host, _, port = str(component["address"]).rpartition(":")
    return not port.isdigit() or tcp_answers(host, int(port))


def stop_stack(settings: Settings, timeout: float = 60.0) -> bool:
    """SIGTERM the supervisor and wait for it; False when nothing was running."""
    state = read_state(settings)
    if state is None:
        return False
    pid = int(state["supervisor_pid"])
    try:
        supervisor = psutil.Process(pid)
        supervisor.terminate()
        supervisor.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        supervisor.kill()
    for component in state.get("components", []):  # a supervisor killed mid-way
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(component["pid"])
            if proc.create_time() >= state["started_at"] - 1:  # not a recycled pid
                proc.kill()
    with contextlib.suppress(FileNotFoundError):
        state_path(settings).unlink()
    return True


def prepare_cloud(hosts: int) -> Callable[[Settings], None]:
    """Between the reactors and the API: the catalog exists and every host has reported."""

    def prepare(settings: Settings) -> None:
        from novalog.db import make_pool
        from producers.catalog import bootstrap_catalog

        pool = make_pool(settings)
        try:
            published = bootstrap_catalog(settings, pool)
            logging.getLogger(__name__).info("catalog: %d entries published", published)
            within = 60 + hosts // 10  # a fleet of 100 simulated hosts starts in ~10 s
            deadline = time.monotonic() + within
            while True:
                with pool.connection() as conn:
                    row = conn.execute("SELECT count(*) FROM compute_nodes WHERE vcpus > 0"
                                       ).fetchone()
                if row and row[0] >= hosts:
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"only {row[0] if row else 0} of {hosts} compute hosts "
                                     f"reported within {within}s; see the compute logs")
                time.sleep(0.1)
        finally:
            pool.close()

    return prepare


def reset_embedded(settings: Settings) -> list[str]:
    """Wipe the embedded broker's and Postgres's data on purpose (and, with DATABASE_URL,
    the deployment's schemas there); refused while running."""
    state = read_state(settings)
    if state and psutil.pid_exists(state["supervisor_pid"]):
        raise StackError(f"novalog is running (supervisor pid {state['supervisor_pid']}): "
                         "`novalog down` first.")
    removed: list[str] = []
    for path in embedded.embedded_paths(settings):
        if path.exists():
            shutil.rmtree(path)
            removed.append(str(path))
    if settings.database_url:  # a database of one's own keeps the folds of the wiped log
        try:
            drop_schemas(settings)
        except psycopg.Error as exc:
            raise StackError(f"the embedded data is wiped, but schema {settings.db_schema} "
                             f"could not be dropped in {redact(settings.database_url)}: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        removed.append(f"schema {settings.db_schema} (and its projections) in "
                       f"{redact(settings.database_url)}")
    return removed
