"""The embedded Apache Kafka: real KRaft nodes started from the jars on Maven Central.

The jars of one pinned Kafka version are fetched once with Maven into a versioned
cache (`$NOVALOG_CACHE_DIR/kafka-<version>/`), moved into place only when complete
and checked against their manifest at every start. A node's storage is formatted
once, with a cluster id kept beside it under `$NOVALOG_HOME`, so the log survives a
restart. Every failure to set up (no Java, an old Java, no Maven, Maven Central out
of reach, a data dir of another cluster) is a StackError of one line saying what to
do, raised before any process is started.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from novalog.process import ProcessSpec, StackError
from novalog.settings import Settings

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # Kafka's POMs carry no logging binding (KAFKA-18466)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
MANIFEST = "MANIFEST.sha256"
MAIN_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
NO_KAFKA_HINT = "or use NOVALOG_BROKER=tansu (memory only) or KAFKA_BOOTSTRAP_SERVERS"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>novalog</groupId><artifactId>embedded-kafka</artifactId><version>1</version>
  <packaging>pom</packaging>
  <repositories><repository><id>central</id><url>{repo}</url></repository></repositories>
  <pluginRepositories>
    <pluginRepository><id>central</id><url>{repo}</url></pluginRepository>
  </pluginRepositories>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} %-5p [%c{1}] %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.Kafka$" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


# -- Java ------------------------------------------------------------------------------
def find_java() -> Path | None:
    """JAVA_HOME's java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    return Path(found) if found else None


def java_major(java: Path) -> int:
    """17 for 'openjdk version "17.0.15"', 8 for '"1.8.0_292"'."""
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{java} does not run ({exc}): fix JAVA_HOME / PATH, "
                         f"{NO_KAFKA_HINT}.") from None
    major = parse_java_major(out.stderr + out.stdout)
    if major is None:
        raise StackError(f"{java} -version printed no version: fix JAVA_HOME / PATH, "
                         f"{NO_KAFKA_HINT}.")
    return major


def parse_java_major(text: str) -> int | None:
    """The major version in `java -version`'s output ("1.8.0" is 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> Path:
    java = find_java()
    if java is None:
        raise StackError("Apache Kafka needs Java >= 17 and none was found (JAVA_HOME, PATH): "
                         f"install openjdk-17-jre-headless, {NO_KAFKA_HINT}.")
    major = java_major(java)
    if major < MIN_JAVA:
        raise StackError(f"{java} is Java {major}; Apache Kafka {KAFKA_VERSION} needs Java "
                         f">= {MIN_JAVA}: install openjdk-17-jre-headless and set JAVA_HOME, "
                         f"{NO_KAFKA_HINT}.")
    return java


# -- the jar cache ---------------------------------------------------------------------
def jar_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{KAFKA_VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_problem(directory: Path) -> str | None:
    """Why a jar cache cannot be used, or None when every jar matches its manifest."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} is missing"
    entries = [line.split("  ", 1) for line in manifest.read_text(errors="replace").splitlines()
               if line]
    if any(len(entry) != 2 for entry in entries):
        return f"{MANIFEST} is malformed"
    names = {name for _, name in entries}
    if MAIN_JAR not in names:
        return f"{MAIN_JAR} is not in {MANIFEST}"
    for digest, name in entries:
        jar = directory / name
        if not jar.is_file():
            return f"{name} is missing"
        if _sha256(jar) != digest:
            return f"{name} does not match its checksum"
    return None


def ensure_jars(settings: Settings) -> Path:
    """The cached jars, fetched (again) when absent or corrupt."""
    target = jar_dir(settings)
    if target.exists():
        problem = cache_problem(target)
        if problem is None:
            return target
        log.warning("the Kafka jar cache %s is corrupt (%s): fetching it again", target,
                    problem)
        shutil.rmtree(target, ignore_errors=True)
    fetch_jars(settings, target)
    return target


def maven_error(output: str) -> str:
    """The first telling line of a failed Maven run."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in output.splitlines()]
    errors = [line.removeprefix("[ERROR]").strip() for line in lines
              if line.startswith("[ERROR]") and line.removeprefix("[ERROR]").strip()]
    first = errors[0] if errors else (lines[-1] if lines else "no output")
    return first[:300]


def fetch_jars(settings: Settings, target: Path) -> None:
    """Maven copies Kafka and its runtime dependencies into a scratch folder, which is
    renamed into place once complete: an interrupted fetch leaves no half cache."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"the Apache Kafka {KAFKA_VERSION} jars are not cached in {target} "
                         "and Maven (mvn) is not installed to fetch them: install maven, "
                         f"{NO_KAFKA_HINT}.")
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".kafka-{KAFKA_VERSION}-", dir=settings.cache_dir))
    try:
        (work / "pom.xml").write_text(POM.format(repo=settings.maven_repository,
                                                 scala=SCALA_VERSION, kafka=KAFKA_VERSION,
                                                 log4j=LOG4J_VERSION))
        lib = work / "lib"
        log.info("fetching Apache Kafka %s from %s with Maven", KAFKA_VERSION,
                 settings.maven_repository)
        try:
            result = subprocess.run(
                [mvn, "-B", "-q", "-f", str(work / "pom.xml"),
                 f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={lib}"],
                capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise StackError(f"fetching Apache Kafka {KAFKA_VERSION} from "
                             f"{settings.maven_repository} took over 15 minutes: check the "
                             f"network, {NO_KAFKA_HINT}.") from None
        if result.returncode != 0 or not (lib / MAIN_JAR).is_file():
            raise StackError(
                f"could not fetch Apache Kafka {KAFKA_VERSION} from "
                f"{settings.maven_repository} with Maven "
                f"({maven_error(result.stdout + result.stderr)}): check the network or the "
                f"proxy (~/.m2/settings.xml), set NOVALOG_MAVEN_REPOSITORY to a mirror, "
                f"{NO_KAFKA_HINT}.")
        jars = sorted(p.name for p in lib.glob("*.jar"))
        (lib / MANIFEST).write_text("".join(f"{_sha256(lib / n)}  {n}\n" for n in jars))
        try:
            lib.rename(target)
        except OSError:
            if cache_problem(target) is not None:  # not a racing fetch that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- one node --------------------------------------------------------------------------
@dataclass(frozen=True)
class KafkaNode:
    """One combined broker + controller of a (possibly one-node) KRaft cluster."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    voters: str  # controller.quorum.voters: "1@127.0.0.1:19093,2@…"
    cluster_size: int = 1
    heap_mb: int = 512
    jit: str = "c1"  # c1: C1 only (see jvm_flags); c2: the JVM's default tiered compilation
    advertised_port: int | None = None  # another port clients are told to use (a proxy)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        replicas = str(min(self.cluster_size, 3))
        min_isr = "2" if self.cluster_size >= 3 else "1"
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.advertised_port or self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "auto.create.topics.enable": "false",  # novalog creates its topics itself
            "log.retention.hours": "-1",  # the log is the source of truth: keep it
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "4",  # the default 50 slows the first join
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
        }

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.data_dir / "log4j2.xml").write_text(LOG4J2)
        return config


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, as `kafka-storage random-uuid`,
    which also never starts one with "-" (it would read as an option)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def _formatted_cluster(node: KafkaNode) -> str | None:
    meta = node.data_dir / "data" / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


CLUSTER_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}")


def cluster_id(id_file: Path, nodes: Iterable[KafkaNode]) -> str:
    """The cluster id kept in `id_file`; a new one on first use. A data dir formatted for
    another cluster is refused: Kafka would refuse it too, less clearly."""
    nodes = list(nodes)
    formatted = {node.data_dir: found for node in nodes
                 if (found := _formatted_cluster(node)) is not None}
    if id_file.is_file():
        wanted = id_file.read_text().strip()
        if not CLUSTER_ID.fullmatch(wanted):
            raise StackError(f"{id_file} does not hold a Kafka cluster id ({wanted[:40]!r}): "
                             "`novalog reset` wipes the embedded data, or put the id back.")
    else:
        ids = set(formatted.values())
        wanted = ids.pop() if len(ids) == 1 else new_cluster_id()
    for data_dir, found_id in formatted.items():
        if found_id != wanted:
            raise StackError(f"{data_dir / 'data'} holds Kafka cluster {found_id}, not this "
                             f"home's cluster {wanted} ({id_file}): `novalog reset` wipes the "
                             "embedded data, or choose another NOVALOG_HOME.")
    if not id_file.is_file():  # kept only once it is known to fit the data
        id_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = id_file.with_name(f".{id_file.name}.{os.getpid()}")
        tmp.write_text(wanted + "\n")
        tmp.replace(id_file)
    return wanted


def format_storage(java: Path, jars: Path, node: KafkaNode, config: Path, cluster: str) -> None:
    """`kafka-storage format` once; a formatted dir of the same cluster is left alone."""
    if _formatted_cluster(node) == cluster:
        return
    result = subprocess.run(
        [str(java), "-cp", f"{jars}/*", f"-Dlog4j2.configurationFile={node.data_dir}/log4j2.xml",
         "kafka.tools.StorageTool", "format", f"--cluster-id={cluster}", "-c", str(config),
         "--ignore-formatted"],
        capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage in {node.data_dir} failed: "
                         f"{(result.stderr or result.stdout).strip()[-500:]}")


def jvm_flags(jit: str) -> list[str]:
    """The stock scripts' flags, and the compiler. On 2 shared cores the C2 compiler of a
    fresh broker burns ~10 CPU-seconds in its first minute of load (more than the requests
    it serves); C1 alone compiles in a tenth of that and serves a dev node's requests well
    (README "Figures": the measured ratio). A long-running production broker wants c2."""
    tiers = ["-XX:TieredStopAtLevel=1"] if jit == "c1" else []
    return ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError", *tiers,
            "-Djava.awt.headless=true"]


def node_spec(java: Path, jars: Path, node: KafkaNode, config: Path, logs: Path,
              name: str = "broker") -> ProcessSpec:
    heap = node.heap_mb
    return ProcessSpec(
        name=name, kind="broker",
        argv=[str(java), f"-Xms{min(heap, 256)}m", f"-Xmx{heap}m", *jvm_flags(node.jit),
              f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.xml'}",
              f"-Dkafka.logs.dir={logs / name}", "-cp", f"{jars}/*", "kafka.Kafka",
              str(config)],
        address=node.address, log_path=logs / f"{name}.log",
        version=f"apache-kafka {KAFKA_VERSION}", stop_timeout=30.0,
    )


def prepare_cluster(settings: Settings, nodes: list[KafkaNode], logs: Path,
                    id_file: Path) -> list[ProcessSpec]:
    """Java checked, jars cached, storage formatted: the specs of the nodes to start."""
    java = require_java()
    jars = ensure_jars(settings)
    cluster = cluster_id(id_file, nodes)
    specs = []
    for node in nodes:
        config = node.write_config()
        format_storage(java, jars, node, config, cluster)
        name = "broker" if len(nodes) == 1 else f"broker-{node.node_id}"
        specs.append(node_spec(java, jars, node, config, logs, name))
    return specs


def single_node(settings: Settings) -> KafkaNode:
    """The dev stack's one node, its data under $NOVALOG_HOME/kafka."""
    return KafkaNode(node_id=1, port=settings.broker_port,
                     controller_port=settings.controller_port,
                     data_dir=settings.home / "kafka",
                     voters=f"1@127.0.0.1:{settings.controller_port}",
                     heap_mb=settings.broker_heap_mb, jit=settings.broker_jit)


def cluster_nodes(base: Path, ports: list[tuple[int, int]], heap_mb: int = 384,
                  ) -> list[KafkaNode]:
    """A loopback cluster of len(ports) nodes: (broker port, controller port) each."""
    voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports, 1))
    return [KafkaNode(node_id=i, port=p, controller_port=c, data_dir=base / f"node-{i}",
                      voters=voters, cluster_size=len(ports), heap_mb=heap_mb)
            for i, (p, c) in enumerate(ports, 1)]
