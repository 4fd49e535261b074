"""`novalog bench`: measurements, never assertions (DESIGN.md §8).

Every scenario starts a stack of its own (`harness.BenchStack`), prints a table,
writes JSON and PNG charts under `--output` (default `bench-results/`), and
records the machine, the broker and Postgres versions and the date.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from novalog.bench import report, synthetic
from novalog.bench.harness import BenchStack, Profiler, Sampler
from novalog.bench.load import Load, Outcome, percentiles
from novalog.bench.report import (
    BrokerFigures,
    BrokersResult,
    LoadResult,
    MemorySample,
    ReplayResult,
    SchedulerResult,
)
from novalog.bench.synthetic import boot_events, scheduler_decisions
from novalog.client import ApiFailure
from producers.catalog import entity_id

__all__ = ["app", "boot_events", "scheduler_decisions"]

app = typer.Typer(help="Measure novalog against a stack the bench starts itself; results are "
                       "printed, written as JSON and drawn as PNG charts.")
console = report.console

Output = Annotated[Path, typer.Option(help="Directory for the JSON and PNG results.")]
Hosts = Annotated[int, typer.Option(
    min=1, max=1000, help="Simulated compute hosts (beyond 16, fleets of up to 100 hosts "
                          "per agent process; NOVALOG_COMPUTE_FLEETS overrides).")]
Replicas = Annotated[int, typer.Option(min=1, max=8,
                                       help="Replicas of scheduler, conductor, projector.")]
Profile = Annotated[bool, typer.Option(help="Sample every role with py-spy meanwhile.")]
Concurrency = Annotated[int, typer.Option(min=1, max=256,
                                          help="Client connections posting at once.")]
DEFAULT_OUTPUT = Path("bench-results")
BROKER_KINDS = ("kafka", "tansu")


@app.callback()
def choose(broker: Annotated[str | None, typer.Option(
        help="Embedded broker of the bench's stacks: kafka (default) or tansu.")] = None,
           ) -> None:
    """Every scenario's stack starts the broker NOVALOG_BROKER names (Apache Kafka)."""
    if broker is not None:
        if broker not in BROKER_KINDS:
            raise typer.BadParameter(f"{broker!r}: use kafka or tansu", param_hint="--broker")
        os.environ["NOVALOG_BROKER"] = broker


def unlimited_quota(load: Load) -> None:
    """The bench measures speed, not quota: admin's limits are lifted (-1) first."""
    project = entity_id("project", "admin")
    load.client.request("PUT", f"/compute/v2.1/os-quota-sets/{project}",
                        json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}})


def _roles_of(stack: BenchStack) -> set[str]:
    return {c.spec.name for c in stack.supervisor.children if c.spec.kind == "role"}


def run_load(scenario: str, parameters: dict[str, float], hosts: int, replicas: int,
             drive: Callable[[Load, Progress], None], timeout: float, output: Path,
             poll_s: float = 0.05, sample_s: float = 0.5, warm_up: bool = True,
             profile: bool = False, qemu_hosts: int = 0,
             prepare: Callable[[BenchStack], str] | None = None,
             extra: Callable[[LoadResult], None] | None = None,
             after: Callable[[LoadResult, Load], None] | None = None) -> LoadResult:
    """Start a stack, boot one server to warm it up, then drive the load while sampling
    every process; write and print what was measured. `prepare` readies the stack and
    names the image to boot (cirros without it); `extra` adds the drive's own figures;
    `after` runs once every boot is done, on the stack still up (the soak's deletes)."""
    console.print(f"[bold]{scenario}[/bold]: starting a stack with {hosts} hosts"
                  + (f" and {qemu_hosts} QEMU hosts" if qemu_hosts else "") + " ...")
    with BenchStack(hosts=hosts, replicas=replicas, qemu_hosts=qemu_hosts) as stack:
        image = prepare(stack) if prepare else "cirros"
        load = Load(stack.client(timeout=120), image=image, poll_s=poll_s)
        unlimited_quota(load)
        result: LoadResult = {"scenario": scenario, "parameters": parameters}
        if warm_up:  # group joins and first connections: paid once per stack, shown apart
            boot = load.post("warm-up")
            load.wait_one(boot)
            result["first_boot_ms"] = round(boot.latency_ms or -1, 1)
            load.boots.clear()
        pids = stack.pids()
        pids["bench client"] = os.getpid()
        roles = _roles_of(stack)
        sampler = Sampler(pids, interval=sample_s, alone=("bench client",))
        profiler = Profiler({k: v for k, v in pids.items() if k in roles},
                            output / f"{scenario}-profile")
        with sampler, Progress(console=console) as bar, \
                profiler if profile else contextlib.nullcontext():
            load.start_observer()
            drive(load, bar)
            task = bar.add_task("waiting for ACTIVE", total=len(load.boots))
            load.wait_all(timeout, lambda n: bar.update(task, completed=n))
            load.stop_observer()
        load.fetch_faults()
        outcome = Outcome.of(load)
        result |= {"summary": outcome.summary(), "machine": report.machine(stack.versions()),
                   "hosts": hosts, "replicas": replicas,
                   "ready_seconds": {k: round(v, 2)
                                     for k, v in stack.supervisor.ready_seconds.items()}}
        if after is not None:
            after(result, load)
    cpu = sampler.cpu_used()
    active = max(1, result["summary"]["active"])
    roles_cpu = sum(v for k, v in cpu.items() if k in roles)
    infra_cpu = sum(v for k, v in cpu.items() if k in ("broker", "postgres"))
    result["cpu_seconds"] = cpu
    result["cpu_ms_per_boot"] = {"roles": round(roles_cpu * 1000 / active, 2),
                                 "roles_and_infrastructure": round(
                                     (roles_cpu + infra_cpu) * 1000 / active, 2)}
    result["peak_rss_mb"] = sampler.peak_rss()
    result["timeline"] = outcome.timeline
    result["load_started_at"] = round(outcome.first_post - sampler.started, 3)
    samples: list[MemorySample] = [
        {"at": s.at, "rss_mb": {k: round(v, 1) for k, v in s.rss_mb.items()}}
        for s in sampler.samples]
    result["memory_samples"] = samples
    if profile:
        result["profile"] = profiler.summary()
        _print_profile(result["profile"], result["cpu_seconds"])
    if extra is not None:
        extra(result)
    return _finish(result, outcome.latencies(), samples, output)


def _print_profile(summary: dict[str, list[tuple[str, float]]],
                   cpu: dict[str, float]) -> None:
    from rich.table import Table

    table = Table(title="where each role's CPU went (py-spy samples, own frame -> leaf)")
    for col in ("role", "CPU s", "share", "frame"):
        table.add_column(col)
    for role, rows in sorted(summary.items(), key=lambda kv: -cpu.get(kv[0], 0)):
        for i, (frame, share) in enumerate(rows[:5]):
            table.add_row(role if i == 0 else "", str(cpu.get(role, "")) if i == 0 else "",
                          f"{share}%", frame)
    console.print(table)


def _finish(result: LoadResult, latencies: list[float], samples: list[MemorySample],
            output: Path) -> LoadResult:
    prefix = output / result["scenario"]
    charts = report.load_charts(result, latencies, samples, prefix)
    result["charts"] = [str(c) for c in charts]
    report.write_json(result, prefix.with_suffix(".json"))
    console.print(report.load_table(result))
    console.print(f"written: {prefix.with_suffix('.json')}, " + ", ".join(map(str, charts)))
    return result


def serial_drive(count: int) -> Callable[[Load, Progress], None]:
    def drive(load: Load, bar: Progress) -> None:
        task = bar.add_task("serial boots", total=count)
        for i in range(count):
            load.wait_one(load.post(f"serial-{i}"))
            bar.advance(task)

    return drive


def burst_drive(count: int, concurrency: int) -> Callable[[Load, Progress], None]:
    def drive(load: Load, bar: Progress) -> None:
        task = bar.add_task("posting", total=count)
        load.burst(count, concurrency, lambda n: bar.update(task, completed=n))
        bar.update(task, completed=count)

    return drive


def qemu_serial_drive(count: int, marker_ms: list[float]) -> Callable[[Load, Progress], None]:
    """Each boot of `tiny` on the QEMU host: POST -> ACTIVE as for any boot, then POST ->
    the guest's marker on its console; then the server is deleted (and its QEMU process
    gone) before the next POST, so one guest at a time runs."""
    from producers.tiny_image import MARKER

    def drive(load: Load, bar: Progress) -> None:
        task = bar.add_task("serial boots of a real guest", total=count)
        for i in range(count):
            boot = load.post(f"qemu-{i}")
            load.wait_one(boot, timeout=120)
            path = f"/compute/v2.1/servers/{boot.server_id}/action"
            deadline = time.perf_counter() + 120
            while boot.status == "ACTIVE" and time.perf_counter() < deadline:
                output = load.client.request("POST", path, json={
                    "os-getConsoleOutput": {"length": None}})["output"]
                if f"{MARKER} uuid={boot.server_id}" in output:
                    marker_ms.append((time.perf_counter() - boot.posted_at) * 1000)
                    break
                time.sleep(0.05)
            load.client.request("DELETE", f"/compute/v2.1/servers/{boot.server_id}")
            while time.perf_counter() < deadline + 60:
                try:
                    load.client.get(f"/compute/v2.1/servers/{boot.server_id}")
                except ApiFailure:
                    break
                time.sleep(0.1)
            bar.advance(task)

    return drive


def _tiny_image(stack: BenchStack) -> str:
    """The tiny guest built (kept under the user's NOVALOG_HOME) and registered."""
    from producers.tiny_image import build, register

    files = build(stack.base.home / "build" / "tiny", console.print)
    register(stack.client(timeout=120), files)
    return "tiny"


@app.command()
def serial(count: Annotated[int | None, typer.Option(
        min=1, help="Boots, one at a time (default 100; 10 with --qemu).")] = None,
           hosts: Hosts = 4, qemu: Annotated[bool, typer.Option(
               help="Boot the real tiny guest on one QEMU host instead (`novalog "
                    "hypervisor setup` first); also times POST -> its console marker.")]
           = False, output: Output = DEFAULT_OUTPUT) -> None:
    """POST -> ACTIVE latency of one boot at a time (the next POST after ACTIVE)."""
    if not qemu:
        count = count or 100
        run_load("serial", {"count": count, "hosts": hosts}, hosts, 1, serial_drive(count),
                 60, output)
        return
    count = count or 10
    marker_ms: list[float] = []
    run_load("serial-qemu", {"count": count, "qemu_hosts": 1}, 1, 1,
             qemu_serial_drive(count, marker_ms), 120, output, qemu_hosts=1,
             prepare=_tiny_image, extra=lambda r: _marker_figures(r, marker_ms))


def _marker_figures(result: LoadResult, marker_ms: list[float]) -> None:
    result["console_marker_ms"] = percentiles(marker_ms)


@app.command()
def burst(count: Annotated[int, typer.Option(min=1, help="Boots posted at once.")] = 1000,
          hosts: Hosts = 10, replicas: Replicas = 1, concurrency: Concurrency = 16,
          output: Output = DEFAULT_OUTPUT, profile: Profile = False) -> None:
    """POST `count` boots as fast as possible: boots/s, latency, time to the last ACTIVE."""
    run_load("burst", {"count": count, "hosts": hosts, "concurrency": concurrency}, hosts,
             replicas, burst_drive(count, concurrency), max(120.0, count / 5), output,
             profile=profile)


@app.command()
def rate(boots_per_second: Annotated[float, typer.Option("--rate", min=0.1,
                                                        help="Offered load.")] = 50,
         duration: Annotated[float, typer.Option(min=1, help="Seconds of load.")] = 30,
         hosts: Hosts = 10, replicas: Replicas = 1, concurrency: Concurrency = 32,
         output: Output = DEFAULT_OUTPUT) -> None:
    """A fixed offered load for a duration: latency, and whether novalog keeps up."""

    def drive(load: Load, bar: Progress) -> None:
        task = bar.add_task(f"{boots_per_second:g} boots/s", total=duration)
        started = time.perf_counter()
        load.at_rate(boots_per_second, duration, concurrency)
        bar.update(task, completed=time.perf_counter() - started)

    result = run_load("rate", {"rate": boots_per_second, "duration": duration,
                               "hosts": hosts}, hosts, replicas, drive, 120, output)
    s = result["summary"]
    # Keeping up: everything offered went ACTIVE, the last within 2 s of the last POST.
    result["keeps_up"] = (s["active"] == int(boots_per_second * duration)
                          and (s["seconds_to_last_active"] or 1e9) <= duration + 2)
    report.write_json(result, output / "rate.json")
    console.print(f"keeps up with {boots_per_second:g} boots/s: {result['keeps_up']}")


@app.command()
def soak(count: Annotated[int, typer.Option(min=1, help="Boots in all.")] = 10_000,
         boots_per_second: Annotated[float, typer.Option("--rate", min=0.1,
                                                         help="Offered load.")] = 20,
         delete_after: Annotated[float, typer.Option(
             min=0, help="Seconds each server stays ACTIVE before the soak deletes it.")] = 30,
         hosts: Hosts = 10, concurrency: Concurrency = 16,
         output: Output = DEFAULT_OUTPUT) -> None:
    """Many boots at a steady rate, each deleted a while after it is ACTIVE, memory of
    every process sampled throughout: does any role grow, does throughput hold?"""
    duration = count / boots_per_second
    stop_deleting = threading.Event()
    deleter: list[threading.Thread] = []

    def drive(load: Load, bar: Progress) -> None:
        deleter.append(threading.Thread(target=load.delete_after,
                                        args=(delete_after, stop_deleting), daemon=True))
        deleter[0].start()
        task = bar.add_task(f"{count} boots at {boots_per_second:g}/s", total=None)
        load.at_rate(boots_per_second, duration, concurrency)
        bar.update(task, completed=1)

    def deletes(result: LoadResult, load: Load) -> None:
        stop_deleting.set()  # what is still there is deleted now
        deleter[0].join()
        started = time.perf_counter()
        left = load.wait_gone(600)
        sent = sum(1 for b in load.boots.values() if b.delete_sent_at is not None)
        failed = sum(1 for b in load.boots.values() if b.delete_failed)
        result["deletes"] = {"sent": sent, "failed": failed, "still_listed": left,
                             "seconds_to_all_gone": round(time.perf_counter() - started, 1)}
        result["throughput_first_last_1000"] = first_last_rate(Outcome.of(load).timeline)

    result = run_load("soak", {"count": count, "rate": boots_per_second, "hosts": hosts,
                               "delete_after": delete_after},
                      hosts, 1, drive, 600, output,
                      sample_s=min(2.0, max(0.2, duration / 50)), after=deletes)
    result["memory_growth_mb_per_1000_boots"] = growth(result)
    report.write_json(result, output / "soak.json")
    console.print(f"deletes: {result.get('deletes')}; boots/s of the first and the last "
                  f"1,000: {result.get('throughput_first_last_1000')}")
    console.print("RSS growth after warm-up, MB per 1,000 boots: "
                  f"{result['memory_growth_mb_per_1000_boots']}")


def first_last_rate(timeline: list[tuple[float, int]], n: int = 1000) -> list[float]:
    """Boots/s over the first `n` and the last `n` ACTIVE (fewer when fewer boots)."""
    times = [t for t, _ in timeline]
    n = min(n, len(times))
    if n < 2:
        return []

    def rate(span: list[float]) -> float:
        return round((len(span) - 1) / max(span[-1] - span[0], 1e-9), 1)

    return [rate(times[:n]), rate(times[-n:])]


def growth(result: LoadResult) -> dict[str, float]:
    """Least-squares slope of each process's RSS against boots done, over the samples
    after the first fifth (warm-up), in MB per 1,000 boots."""
    done = [t for t, _ in result["timeline"]]
    samples = result["memory_samples"]
    samples = samples[len(samples) // 5:]
    out: dict[str, float] = {}
    if len(samples) < 3 or not done:
        return out
    import bisect

    xs = [bisect.bisect_right(done, s["at"] - result.get("load_started_at", 0.0))
          for s in samples]
    mean_x = sum(xs) / len(xs)
    var = sum((x - mean_x) ** 2 for x in xs) or 1.0
    for name in samples[0]["rss_mb"]:
        ys = [s["rss_mb"][name] for s in samples]
        mean_y = sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
        out[name] = round(slope * 1000, 2)
    return out


def run_replay(events: int, output: Path) -> ReplayResult:
    with BenchStack(hosts=0, roles=False) as stack:
        result = synthetic.replay(stack.settings, events)
        result["machine"] = report.machine(stack.versions())
    report.write_json(result, output / "replay.json")
    console.print(f"replayed {events:,} events in {result['seconds']}s: "
                  f"[bold]{result['events_per_second']:,} events/s[/bold] "
                  f"(written to {output / 'replay.json'})")
    return result


@app.command()
def replay(events: Annotated[int, typer.Option(min=10, help="Events to replay.")] = 100_000,
           output: Output = DEFAULT_OUTPUT) -> None:
    """Events per second of a full projection rebuild (synthetic boots, real projector)."""
    run_replay(events, output)


@app.command()
def brokers(serial_count: Annotated[int, typer.Option(min=1)] = 100,
            burst_count: Annotated[int, typer.Option(min=1)] = 500,
            replay_events: Annotated[int, typer.Option(min=10)] = 50_000,
            serial_hosts: Hosts = 4, hosts: Hosts = 10, concurrency: Concurrency = 16,
            output: Output = DEFAULT_OUTPUT) -> None:
    """The same serial, burst and replay scenarios on Apache Kafka and on Tansu, one after
    the other in one run, side by side (brokers.json, and each scenario's own files)."""
    figures: dict[str, BrokerFigures] = {}
    for kind in BROKER_KINDS:
        os.environ["NOVALOG_BROKER"] = kind
        out = output / f"broker-{kind}"
        ser = run_load("serial", {"count": serial_count, "hosts": serial_hosts}, serial_hosts,
                       1, serial_drive(serial_count), 60, out)
        bur = run_load("burst", {"count": burst_count, "hosts": hosts,
                                 "concurrency": concurrency}, hosts, 1,
                       burst_drive(burst_count, concurrency), max(120.0, burst_count / 5), out)
        rep = run_replay(replay_events, out)
        figures[kind] = report.broker_figures(ser, bur, rep)
    result: BrokersResult = {
        "scenario": "brokers", "figures": figures, "machine": report.machine(),
        "parameters": {"serial": serial_count, "burst": burst_count,
                       "replay_events": replay_events, "serial_hosts": serial_hosts,
                       "hosts": hosts}}
    report.write_json(result, output / "brokers.json")
    console.print(report.brokers_table(result))


@app.command("compare")
def compare_command(
        a: Annotated[str, typer.Argument(
            metavar="A", help="Side A: [label:]KEY=VALUE[,KEY=VALUE...] (environment), or "
                              "another checkout's path.")],
        b: Annotated[str, typer.Argument(metavar="B", help="Side B, the same way.")],
        scenario: Annotated[str, typer.Option(help="serial, burst, rate, soak, replay or "
                                                   "scheduler.")] = "burst",
        arguments: Annotated[str, typer.Option("--args", help="The scenario's own options, "
                                               "e.g. '--count 300 --hosts 10'.")] = "",
        rounds: Annotated[int, typer.Option(min=1, max=20,
                                            help="Runs of each side, alternating.")] = 2,
        output: Output = DEFAULT_OUTPUT) -> None:
    """Two configurations run alternately on this machine: each figure's median per side
    and the ratio B / A (compare.json; each run's own files under compare/a-N, b-N)."""
    import shlex

    from novalog.bench import compare

    try:
        sides = compare.Side.parse(a, "A"), compare.Side.parse(b, "B")
        result = compare.compare(*sides, scenario, shlex.split(arguments), rounds, output)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(compare.compare_table(result))
    console.print(f"written: {output / 'compare.json'}")


@app.command()
def scheduler(output: Output = DEFAULT_OUTPUT) -> None:
    """Decision time of the filter + weigher pipeline for 10 to 10,000 hosts."""
    from rich.table import Table

    rows = synthetic.scheduler()
    table = Table(title="scheduler decision time (select_destination)")
    for col in ("hosts", "decisions", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("hosts", "decisions", "p50_ms", "p99_ms",
                                            "max_ms")))
    console.print(table)
    result: SchedulerResult = {"scenario": "scheduler", "results": rows,
                               "machine": report.machine()}
    chart = report.scheduler_chart(result, output / "scheduler.png")
    report.write_json(result, output / "scheduler.json")
    console.print(f"written: {output / 'scheduler.json'}, {chart}")
