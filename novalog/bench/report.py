"""The bench's outputs: a table on the terminal, JSON, and PNG charts (matplotlib, Agg:
no display needed)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NotRequired, Required, TypedDict

from rich.console import Console
from rich.table import Table

from novalog.bench.load import LoadSummary, Percentiles

console = Console()


class Machine(TypedDict):
    cores: int | None
    cpu: str
    memory_gib: float
    python: str
    kernel: str
    date: str
    broker: NotRequired[str]  # the versions of the stack's broker and Postgres
    postgres: NotRequired[str]


class CpuPerBoot(TypedDict):
    roles: float
    roles_and_infrastructure: float


class MemorySample(TypedDict):
    at: float
    rss_mb: dict[str, float]  # by process


class SoakDeletes(TypedDict):
    sent: int  # DELETEs answered 204
    failed: int  # DELETEs refused or unanswered (not sent again)
    still_listed: int  # deleted servers the API still listed when the soak gave up
    seconds_to_all_gone: float  # from the last DELETE sent to none listed


class LoadResult(TypedDict, total=False):
    """What a load scenario (serial, burst, rate, soak) measured, as written to JSON."""

    scenario: Required[str]
    parameters: Required[dict[str, float]]
    first_boot_ms: float  # the warm-up boot, not counted
    summary: LoadSummary
    machine: Machine
    hosts: int
    replicas: int
    ready_seconds: dict[str, float]  # by process
    cpu_seconds: dict[str, float]
    cpu_ms_per_boot: CpuPerBoot
    peak_rss_mb: dict[str, float]
    timeline: list[tuple[float, int]]  # (seconds since the first POST, ACTIVE so far)
    load_started_at: float
    memory_samples: list[MemorySample]
    profile: dict[str, list[tuple[str, float]]]  # by role: (frame, share of samples)
    charts: list[str]
    keeps_up: bool  # rate
    memory_growth_mb_per_1000_boots: dict[str, float]  # soak
    deletes: SoakDeletes  # soak
    throughput_first_last_1000: list[float]  # soak: boots/s of the first and last 1,000
    console_marker_ms: Percentiles  # serial --qemu: POST -> the guest's marker on its console


class ReplayResult(TypedDict):
    scenario: str
    events: int
    seconds: float
    events_per_second: int
    batch_size: int
    machine: NotRequired[Machine]


class BrokerFigures(TypedDict):
    broker: str
    serial_p50_ms: float | None
    serial_p99_ms: float | None
    burst_boots_per_second: float | None
    burst_p99_ms: float | None
    cpu_ms_per_boot_roles: float
    cpu_ms_per_boot_all: float
    broker_cpu_ms_per_boot: float
    replay_events_per_second: int
    broker_peak_rss_mb: float
    broker_start_s: float | None


class BrokersResult(TypedDict):
    scenario: str
    figures: dict[str, BrokerFigures]  # by broker kind
    machine: Machine
    parameters: dict[str, int]


class SchedulerRow(TypedDict):
    hosts: int
    decisions: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class SchedulerResult(TypedDict):
    scenario: str
    results: list[SchedulerRow]
    machine: Machine


BenchResult = LoadResult | ReplayResult | BrokersResult | SchedulerResult


def machine(versions: Mapping[str, str] | None = None) -> Machine:
    """This machine, and the versions of the stack's broker and Postgres when given."""
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = next((int(line.split()[1]) for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    found: Machine = {"cores": os.cpu_count(), "cpu": model,
                      "memory_gib": round(mem_kb / 2**20, 1),
                      "python": platform.python_version(), "kernel": platform.release(),
                      "date": datetime.now(UTC).date().isoformat()}
    if versions is not None:
        found["broker"], found["postgres"] = versions["broker"], versions["postgres"]
    return found


def write_json(result: BenchResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_table(result: LoadResult) -> Table:
    s = result["summary"]
    table = Table(title=f"{result['scenario']}: {result['parameters']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    lat, post = s["latency_ms"], s["post_ms"]
    rows = [
        ("boots ACTIVE / accepted / refused", f"{s['active']} / {s['accepted']} / {s['refused']}"),
        ("ERROR / unfinished", f"{s['error']} / {s['unfinished']}"),
        ("POST -> ACTIVE p50 / p95 / p99 / max ms",
         f"{lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']}"),
        ("POST answer p50 / p99 ms", f"{post['p50']} / {post['p99']}"),
        ("boots/s (ACTIVE / first POST to last ACTIVE)", str(s["boots_per_second"])),
        ("seconds to last ACTIVE", str(s["seconds_to_last_active"])),
        ("CPU ms per boot, roles", str(result["cpu_ms_per_boot"]["roles"])),
        ("CPU ms per boot, roles + broker + Postgres",
         str(result["cpu_ms_per_boot"]["roles_and_infrastructure"])),
    ]
    if "console_marker_ms" in result:
        marker = result["console_marker_ms"]
        rows.insert(3, ("POST -> guest's console marker p50 / p95 / max ms",
                        f"{marker['p50']} / {marker['p95']} / {marker['max']}"))
    if "keeps_up" in result:
        rows.append(("keeps up with the offered rate", str(result["keeps_up"])))
    if "first_boot_ms" in result:
        rows.append(("warm-up boot (not counted) ms", str(result["first_boot_ms"])))
    for name, mb in sorted(result["peak_rss_mb"].items()):
        rows.append((f"peak RSS {name} MB", str(mb)))
    for label, value in rows:
        table.add_row(label, value)
    return table


def broker_figures(serial: LoadResult, burst: LoadResult,
                   replay: ReplayResult) -> BrokerFigures:
    """The figures that tell two brokers apart, from one serial, burst and replay run."""
    def rss(result: LoadResult) -> float:
        return float(result["peak_rss_mb"].get("broker", 0.0))

    return {
        "broker": burst["machine"]["broker"],
        "serial_p50_ms": serial["summary"]["latency_ms"]["p50"],
        "serial_p99_ms": serial["summary"]["latency_ms"]["p99"],
        "burst_boots_per_second": burst["summary"]["boots_per_second"],
        "burst_p99_ms": burst["summary"]["latency_ms"]["p99"],
        "cpu_ms_per_boot_roles": burst["cpu_ms_per_boot"]["roles"],
        "cpu_ms_per_boot_all": burst["cpu_ms_per_boot"]["roles_and_infrastructure"],
        "broker_cpu_ms_per_boot": round(burst["cpu_seconds"].get("broker", 0.0) * 1000
                                        / max(1, burst["summary"]["active"]), 2),
        "replay_events_per_second": replay["events_per_second"],
        "broker_peak_rss_mb": max(rss(serial), rss(burst)),
        "broker_start_s": serial.get("ready_seconds", {}).get("broker"),
    }


BROKER_ROWS = [
    ("broker", "broker"), ("serial POST -> ACTIVE p50 ms", "serial_p50_ms"),
    ("serial POST -> ACTIVE p99 ms", "serial_p99_ms"),
    ("burst boots/s", "burst_boots_per_second"), ("burst p99 ms", "burst_p99_ms"),
    ("CPU ms per boot, roles", "cpu_ms_per_boot_roles"),
    ("CPU ms per boot, roles + broker + Postgres", "cpu_ms_per_boot_all"),
    ("CPU ms per boot, broker alone", "broker_cpu_ms_per_boot"),
    ("replay events/s", "replay_events_per_second"),
    ("broker peak RSS MB", "broker_peak_rss_mb"), ("broker start to ready s", "broker_start_s"),
]


def brokers_table(result: BrokersResult) -> Table:
    figures: dict[str, Mapping[str, object]] = dict(result["figures"])
    table = Table(title=f"brokers side by side: {result['parameters']}")
    table.add_column("figure")
    for kind in figures:
        table.add_column(kind, justify="right")
    for label, key in BROKER_ROWS:
        table.add_row(label, *(str(figures[k].get(key)) for k in figures))
    return table


def load_charts(result: LoadResult, latencies: list[float],
                samples: list[MemorySample], prefix: Path) -> list[Path]:
    """Latency distribution, throughput over time and memory over time."""
    plt = _pyplot()
    out = []
    title = f"novalog bench {result['scenario']} ({result['machine']['date']}, " \
            f"{result['machine']['cores']} cores)"
    if latencies:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.hist(latencies, bins=min(60, max(10, len(latencies) // 10)), color="#4878a8")
        ax.set_xlabel("POST -> ACTIVE (ms)")
        ax.set_ylabel("boots")
        cdf = ax.twinx()
        cdf.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))],
                 color="#c44e52")
        cdf.set_ylabel("fraction of boots (CDF)")
        cdf.set_ylim(0, 1.01)
        ax.set_title(f"{title}\nlatency distribution")
        out.append(_save(fig, prefix.with_name(prefix.name + "-latency.png")))
    timeline = result.get("timeline", [])
    if timeline:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        seconds = [t for t, _ in timeline]
        buckets: dict[int, int] = {}
        for t in seconds:
            buckets[int(t)] = buckets.get(int(t), 0) + 1
        xs = list(range(0, int(seconds[-1]) + 1))
        ax.bar(xs, [buckets.get(x, 0) for x in xs], width=0.9, align="edge",
               color="#55a868", label="ACTIVE per second")
        ax.set_xlabel("seconds since the first POST")
        ax.set_ylabel("boots reaching ACTIVE per second")
        total = ax.twinx()
        total.plot(seconds, [n for _, n in timeline], color="#4878a8", label="ACTIVE so far")
        total.set_ylabel("ACTIVE so far")
        ax.set_title(f"{title}\nthroughput over time")
        out.append(_save(fig, prefix.with_name(prefix.name + "-throughput.png")))
    if samples:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name in samples[0]["rss_mb"]:
            ax.plot([s["at"] for s in samples], [s["rss_mb"][name] for s in samples],
                    label=name, linewidth=1)
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS (MB)")
        ax.legend(fontsize=6, ncol=3)
        ax.set_title(f"{title}\nmemory over time")
        out.append(_save(fig, prefix.with_name(prefix.name + "-memory.png")))
    return out


def scheduler_chart(result: SchedulerResult, path: Path) -> Path:
    plt = _pyplot()
    rows = result["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    hosts = [r["hosts"] for r in rows]
    ax.plot(hosts, [r["p50_ms"] for r in rows], marker="o", label="p50")
    ax.plot(hosts, [r["p99_ms"] for r in rows], marker="o", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hosts")
    ax.set_ylabel("select_destination (ms)")
    ax.legend()
    ax.set_title(f"scheduler decision time vs host count ({result['machine']['date']})")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
