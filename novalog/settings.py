"""Settings from the environment, read once per process and passed down explicitly."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """An environment variable holds a value novalog cannot use."""


def _default_cache() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "novalog"


BROKERS = ("kafka", "tansu")
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"


def _default_home() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "novalog"


def env_float(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    """A float variable, or SettingsError naming it."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < low:
        raise SettingsError(f"{name}={value} is below {low}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes / no variable (1, true, yes, on / 0, false, no, off), or SettingsError."""
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes or a no (1/0, true/false, yes/no)")


def env_int(env: Mapping[str, str], name: str, default: int, low: int = 1,
            high: int = 2**31 - 1) -> int:
    """An integer variable within bounds, or SettingsError naming it."""
    return _int(env, name, default, low, high)


def _int(env: Mapping[str, str], name: str, default: int, low: int = 1,
         high: int = 2**31 - 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


BROKER_JITS = ("c1", "c2")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name) or default
    if raw not in allowed:
        raise SettingsError(f"{name}={raw!r}: use {' or '.join(allowed)}")
    return raw


def public_url(raw: str | None) -> str | None:
    """NOVALOG_PUBLIC_URL: an http(s) base URL (a path prefix is kept, for a proxy)."""
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise SettingsError(f"NOVALOG_PUBLIC_URL={raw!r}: use http(s)://host[:port][/prefix]")
    return raw.rstrip("/")


@dataclass(frozen=True)
class ComputeSettings:
    """One compute agent's host (NOVALOG_COMPUTE_*), and Nova's allocation ratios."""

    host: str | None = None  # set by `novalog up` for each agent
    vcpus: int = 8
    memory_mb: int = 16384
    disk_gb: int | None = None  # None: 200 on the test driver, the file system's on QEMU
    libvirt_uri: str | None = None  # None: the test driver with a host of these figures
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    shares: int = 1  # compute hosts sharing this real machine: each reports 1/shares of it
    zone: str = "nova"  # the host's availability zone (Nova's default_availability_zone)
    force_config_drive: bool = False  # Nova's force_config_drive: every guest gets one
    shutdown_timeout_s: float = 60.0  # Nova's shutdown_timeout
    soft_reboot_wait_s: float = 120.0  # Nova's [libvirt] wait_soft_reboot_seconds

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> ComputeSettings:
        return cls(
            host=e.get("NOVALOG_COMPUTE_HOST") or None,
            vcpus=env_int(e, "NOVALOG_COMPUTE_VCPUS", 8),
            memory_mb=env_int(e, "NOVALOG_COMPUTE_MEMORY_MB", 16384, low=128),
            disk_gb=env_int(e, "NOVALOG_COMPUTE_DISK_GB", 0) or None,
            libvirt_uri=e.get("NOVALOG_LIBVIRT_URI") or None,
            cpu_allocation_ratio=env_float(e, "NOVALOG_CPU_ALLOCATION_RATIO", 4.0),
            ram_allocation_ratio=env_float(e, "NOVALOG_RAM_ALLOCATION_RATIO", 1.0),
            disk_allocation_ratio=env_float(e, "NOVALOG_DISK_ALLOCATION_RATIO", 1.0),
            shares=env_int(e, "NOVALOG_COMPUTE_SHARES", 1, low=1),
            zone=e.get("NOVALOG_COMPUTE_ZONE") or "nova",
            force_config_drive=env_bool(e, "NOVALOG_FORCE_CONFIG_DRIVE", False),
            shutdown_timeout_s=env_float(e, "NOVALOG_SHUTDOWN_TIMEOUT_S", 60.0),
            soft_reboot_wait_s=env_float(e, "NOVALOG_SOFT_REBOOT_WAIT_S", 120.0),
        )

    def require_hosts(self) -> list[str]:
        """The hosts this agent is: one (a real machine), or a fleet of simulated ones
        (`cmp1,cmp2,...`), each still with its own driver, tracker, claims and topic."""
        hosts = [h.strip() for h in (self.host or "").split(",") if h.strip()]
        if not hosts:
            raise SettingsError("NOVALOG_COMPUTE_HOST is not set: which host is this agent?")
        if len(set(hosts)) != len(hosts):
            raise SettingsError(f"NOVALOG_COMPUTE_HOST={self.host!r} names a host twice")
        return hosts


def private_cidr(raw: str) -> str:
    """A network for the bootstrap `private` network, or SettingsError saying why not."""
    try:
        cidr = ipaddress.IPv4Network(raw)
    except ValueError as exc:
        raise SettingsError(f"NOVALOG_PRIVATE_CIDR={raw!r}: {exc}") from None
    if cidr.num_addresses < 8:
        raise SettingsError(f"NOVALOG_PRIVATE_CIDR={raw!r}: too small for a network")
    return str(cidr)


@dataclass(frozen=True)
class Settings:
    """Everything a role needs to find the broker, the database and its peers.

    `kafka_bootstrap_servers` / `database_url` are None when the embedded
    broker / Postgres are to be used (`novalog up` then fills them in for the
    roles it starts).
    """

    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    db_schema: str = "novalog"
    topic_prefix: str = "novalog"
    partitions: int = 4
    replication_factor: int = 1
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    poll_timeout_ms: int = 100
    fetch_wait_ms: int | None = None  # None: the default (fetch_wait), README "Latency settings"
    linger_ms: int = 5
    compute_fleets: int = 0  # processes the simulated hosts share; 0: one each (as real ones)
    max_retries: int = 3
    retry_backoff_ms: int = 200
    home: Path = field(default_factory=_default_home)
    broker_port: int = 19092
    controller_port: int = 19093
    broker: str | None = None  # kafka | tansu; None: Kafka when Java is there (embedded)
    broker_heap_mb: int = 512
    broker_jit: str = "c1"  # the embedded node's JIT: c1 (quick) or c2 (tiered), README "Figures"
    cache_dir: Path = field(default_factory=_default_cache)
    maven_repository: str = MAVEN_CENTRAL
    postgres_port: int = 15432
    api_host: str = "127.0.0.1"
    api_port: int = 8774
    public_url: str | None = None  # the base URL the catalog advertises; None: the request's
    hostname: str = field(default_factory=socket.gethostname)
    token_keys: tuple[str, ...] = field(default=(), repr=False)  # () : a key file in home
    token_ttl_s: int = 3600
    admin_password: str = field(default="admin", repr=False)
    demo_password: str = field(default="demo", repr=False)
    private_cidr: str = "10.0.0.0/24"
    max_attempts: int = 3  # Nova's scheduler.max_attempts
    build_timeout_s: float = 300.0
    host_subset_size: int = 1
    report_interval_s: float = 10.0  # Nova's report_interval: every service's heartbeat
    service_down_time_s: float = 60.0  # Nova's service_down_time
    sync_power_state_interval_s: float = 600.0  # Nova's sync_power_state_interval
    resize_confirm_window_s: float = 0.0  # Nova's resize_confirm_window (0: never automatic)
    compute: ComputeSettings = field(default_factory=ComputeSettings)

    @property
    def volumes_dir(self) -> Path:
        """The file backend's volumes (hosts reach them by path: shared across machines)."""
        return self.home / "volumes"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read NOVALOG_* (and the two infrastructure URLs); bad values raise SettingsError."""
        e = os.environ if env is None else env
        prefix = e.get("NOVALOG_TOPIC_PREFIX", "novalog")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", prefix):
            raise SettingsError(f"NOVALOG_TOPIC_PREFIX={prefix!r}: use letters, digits, . _ -")
        schema = e.get("NOVALOG_DB_SCHEMA", "novalog")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise SettingsError(f"NOVALOG_DB_SCHEMA={schema!r}: use a lower-case SQL identifier")
        broker = e.get("NOVALOG_BROKER") or None
        if broker is not None and broker not in BROKERS:
            raise SettingsError(f"NOVALOG_BROKER={broker!r}: use kafka or tansu")
        return cls(
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            database_url=e.get("DATABASE_URL") or None,
            db_schema=schema,
            topic_prefix=prefix,
            partitions=_int(e, "NOVALOG_PARTITIONS", 4, high=1000),
            replication_factor=_int(e, "NOVALOG_REPLICATION_FACTOR", 1, high=10),
            session_timeout_ms=_int(e, "NOVALOG_SESSION_TIMEOUT_MS", 6000, low=1000),
            heartbeat_interval_ms=_int(e, "NOVALOG_HEARTBEAT_INTERVAL_MS", 1000, low=100),
            poll_timeout_ms=_int(e, "NOVALOG_POLL_TIMEOUT_MS", 100, low=1),
            fetch_wait_ms=_int(e, "NOVALOG_FETCH_WAIT_MS", 0, low=1, high=10_000) or None,
            linger_ms=_int(e, "NOVALOG_LINGER_MS", 5, low=0, high=10_000),
            compute_fleets=_int(e, "NOVALOG_COMPUTE_FLEETS", 0, low=0, high=1000),
            max_retries=_int(e, "NOVALOG_MAX_RETRIES", 3, low=0, high=100),
            retry_backoff_ms=_int(e, "NOVALOG_RETRY_BACKOFF_MS", 200, low=0),
            home=Path(e.get("NOVALOG_HOME") or _default_home()),
            broker_port=_int(e, "NOVALOG_BROKER_PORT", 19092, high=65535),
            controller_port=_int(e, "NOVALOG_CONTROLLER_PORT", 19093, high=65535),
            broker=broker,
            broker_heap_mb=_int(e, "NOVALOG_BROKER_HEAP_MB", 512, low=128, high=65536),
            broker_jit=_choice(e, "NOVALOG_BROKER_JIT", "c1", BROKER_JITS),
            cache_dir=Path(e.get("NOVALOG_CACHE_DIR") or _default_cache()),
            maven_repository=e.get("NOVALOG_MAVEN_REPOSITORY") or MAVEN_CENTRAL,
            postgres_port=_int(e, "NOVALOG_POSTGRES_PORT", 15432, high=65535),
            api_host=e.get("NOVALOG_API_HOST", "127.0.0.1"),
            api_port=_int(e, "NOVALOG_API_PORT", 8774, high=65535),
            public_url=public_url(e.get("NOVALOG_PUBLIC_URL") or None),
            hostname=e.get("NOVALOG_HOST") or socket.gethostname(),
            token_keys=tuple(k.strip() for k in e.get("NOVALOG_TOKEN_KEYS", "").split(",")
                             if k.strip()),
            token_ttl_s=_int(e, "NOVALOG_TOKEN_TTL_S", 3600, low=1),
            admin_password=e.get("NOVALOG_ADMIN_PASSWORD") or "admin",
            demo_password=e.get("NOVALOG_DEMO_PASSWORD") or "demo",
            private_cidr=private_cidr(e.get("NOVALOG_PRIVATE_CIDR") or "10.0.0.0/24"),
            max_attempts=_int(e, "NOVALOG_MAX_ATTEMPTS", 3, high=100),
            build_timeout_s=env_float(e, "NOVALOG_BUILD_TIMEOUT_S", 300.0, low=1.0),
            host_subset_size=_int(e, "NOVALOG_HOST_SUBSET_SIZE", 1, high=1000),
            report_interval_s=env_float(e, "NOVALOG_REPORT_INTERVAL_S", 10.0, low=0.1),
            service_down_time_s=env_float(e, "NOVALOG_SERVICE_DOWN_TIME_S", 60.0, low=1.0),
            sync_power_state_interval_s=env_float(e, "NOVALOG_SYNC_POWER_STATE_INTERVAL_S",
                                                  600.0, low=0.1),
            resize_confirm_window_s=env_float(e, "NOVALOG_RESIZE_CONFIRM_WINDOW_S", 0.0,
                                              low=0.0),
            compute=ComputeSettings.from_env(e),
        )

    def with_infrastructure(self, bootstrap: str, database_url: str) -> Settings:
        """The settings a role gets once the broker and database are known."""
        return replace(self, kafka_bootstrap_servers=bootstrap, database_url=database_url)

    @property
    def fetch_wait(self) -> int:
        """Consumers' fetch.wait.max.ms: NOVALOG_FETCH_WAIT_MS, else 500 on Apache Kafka and
        20 on Tansu. Kafka answers a waiting fetch as soon as a record arrives, so the long
        wait costs no latency and spares the broker empty fetches; Tansu often answers only
        when the wait runs out (README "Latency settings")."""
        if self.fetch_wait_ms is not None:
            return self.fetch_wait_ms
        return 20 if self.broker == "tansu" else 500

    @property
    def trusts_watermarks(self) -> bool:
        """Apache Kafka's (and any real broker's) watermarks are right; Tansu's are not."""
        return self.broker != "tansu"

    def require_bootstrap(self) -> str:
        """The broker address, or a clear error when neither env nor `novalog up` gave one."""
        if not self.kafka_bootstrap_servers:
            raise SettingsError("KAFKA_BOOTSTRAP_SERVERS is not set: start the stack with "
                                "`novalog up` or point it at a Kafka broker")
        return self.kafka_bootstrap_servers

    def require_database_url(self) -> str:
        """The database URL, or a clear error."""
        if not self.database_url:
            raise SettingsError("DATABASE_URL is not set: start the stack with `novalog up` "
                                "or point it at a PostgreSQL server")
        return self.database_url

    def as_env(self) -> dict[str, str]:
        """Environment for a child role process, so it reads back the same settings."""
        env = {
            "NOVALOG_DB_SCHEMA": self.db_schema,
            "NOVALOG_TOPIC_PREFIX": self.topic_prefix,
            "NOVALOG_PARTITIONS": str(self.partitions),
            "NOVALOG_REPLICATION_FACTOR": str(self.replication_factor),
            "NOVALOG_SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
            "NOVALOG_HEARTBEAT_INTERVAL_MS": str(self.heartbeat_interval_ms),
            "NOVALOG_POLL_TIMEOUT_MS": str(self.poll_timeout_ms),
            "NOVALOG_FETCH_WAIT_MS": str(self.fetch_wait_ms or ""),
            "NOVALOG_LINGER_MS": str(self.linger_ms),
            "NOVALOG_COMPUTE_FLEETS": str(self.compute_fleets),
            "NOVALOG_MAX_RETRIES": str(self.max_retries),
            "NOVALOG_RETRY_BACKOFF_MS": str(self.retry_backoff_ms),
            "NOVALOG_HOME": str(self.home),
            "NOVALOG_API_HOST": self.api_host,
            "NOVALOG_API_PORT": str(self.api_port),
            "NOVALOG_PUBLIC_URL": self.public_url or "",
            "NOVALOG_HOST": self.hostname,
            "NOVALOG_CACHE_DIR": str(self.cache_dir),
        }
        if self.broker:
            env["NOVALOG_BROKER"] = self.broker
        if self.kafka_bootstrap_servers:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap_servers
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        return env
