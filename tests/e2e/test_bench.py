"""`novalog bench` as a user runs it, with small N (the CI smoke of issue 6).

These tests check what the bench does and writes, never how fast anything was:
figures are reported, not asserted (DESIGN.md §8). Each scenario starts a stack
of its own; on the embedded path it must also leave nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Infra

PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.timeout(600)


def bench(env: dict[str, str], *args: str, timeout: float = 300) -> dict[str, Any]:
    out = Path(env["NOVALOG_HOME"]).parent / "results"
    result = subprocess.run([sys.executable, "-m", "novalog", "bench", *args, "--output",
                             str(out)], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data: dict[str, Any] = json.loads((out / f"{args[0]}.json").read_text())
    for chart in data.get("charts", []):
        assert Path(chart).read_bytes()[:8] == PNG, chart
    return data


def _common(data: dict[str, Any], boots: int) -> None:
    s = data["summary"]
    assert (s["accepted"], s["active"], s["error"], s["unfinished"]) == (boots, boots, 0, 0)
    assert s["latency_ms"]["n"] == boots and s["latency_ms"]["p50"] > 0
    m = data["machine"]
    assert m["cores"] >= 1 and m["date"] and m["python"]
    assert m["broker"] and m["postgres"].startswith("PostgreSQL")
    roles = {"api", "projector", "scheduler", "conductor", "network"}
    assert roles <= set(data["cpu_seconds"]) and roles <= set(data["peak_rss_mb"])
    computes = [k for k in data["cpu_seconds"] if k.startswith("compute-")]
    # the bench's hosts share one agent process (a fleet of one is named by its host)
    assert computes in (["compute-cmp1"], ["compute-fleet1"]), computes
    roles.add(computes[0])
    assert all(v > 0 for k, v in data["peak_rss_mb"].items() if k in roles)
    assert data["cpu_ms_per_boot"]["roles"] > 0
    assert len(data["timeline"]) == boots and data["timeline"][-1][1] == boots
    assert {Path(c).name.split("-", 1)[1] for c in data["charts"]} == {
        "latency.png", "throughput.png", "memory.png"}


def test_burst_serial_rate_and_soak_boot_everything_they_post(novalog_env) -> None:
    _common(bench(novalog_env, "burst", "--count", "12", "--hosts", "2",
                  "--concurrency", "4"), 12)
    serial = bench(novalog_env, "serial", "--count", "3", "--hosts", "1")
    _common(serial, 3)
    assert serial["first_boot_ms"] > 0  # the warm-up boot, reported apart
    rate = bench(novalog_env, "rate", "--rate", "4", "--duration", "2", "--hosts", "1")
    _common(rate, 8)
    assert isinstance(rate["keeps_up"], bool)
    soak = bench(novalog_env, "soak", "--count", "10", "--rate", "5", "--hosts", "1",
                 "--delete-after", "0.5")
    _common(soak, 10)
    assert "api" in soak["memory_growth_mb_per_1000_boots"]
    assert soak["deletes"]["sent"] == 10 and soak["deletes"]["still_listed"] == 0
    assert soak["deletes"]["failed"] == 0
    first, last = soak["throughput_first_last_1000"]  # ten boots: both spans are all ten
    assert first == last > 0
    assert not (Path(novalog_env["NOVALOG_HOME"]) / "stack.json").exists()


def test_replay_and_scheduler_write_their_figures(novalog_env) -> None:
    replay = bench(novalog_env, "replay", "--events", "200")
    assert replay["events"] == 200 and replay["events_per_second"] > 0
    assert replay["machine"]["postgres"].startswith("PostgreSQL")
    sched = bench(novalog_env, "scheduler")
    assert [r["hosts"] for r in sched["results"]] == [10, 100, 1000, 10000]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in sched["results"])
    assert Path(novalog_env["NOVALOG_HOME"]).parent.joinpath(
        "results", "scheduler.png").read_bytes()[:8] == PNG


def test_on_a_configured_database_the_bench_drops_what_it_made(novalog_env,
                                                                infra: Infra) -> None:
    env = {**novalog_env, "DATABASE_URL": infra.database_url,
           "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap}
    _common(bench(env, "burst", "--count", "4", "--hosts", "1"), 4)
    with psycopg.connect(infra.database_url) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                            "'bench\\_%'").fetchall()
    assert left == []


def test_compare_runs_both_sides_alternately_and_states_ratios(novalog_env) -> None:
    """Settings on one side, a checkout (this one) on the other: both really run, twice,
    alternating, and compare.json holds each round, the medians and B / A."""
    root = Path(__file__).resolve().parents[2]
    data = bench(novalog_env, "compare", "plain:NOVALOG_LOG_LEVEL=WARNING", str(root),
                 "--scenario", "scheduler", "--rounds", "2")
    out = Path(novalog_env["NOVALOG_HOME"]).parent / "results" / "compare"
    assert data["compared"] == "scheduler" and data["rounds"] == 2
    assert (data["a"]["label"], data["b"]["label"]) == ("plain", root.name)
    names = {f"p99_ms_at_{n}_hosts" for n in (10, 100, 1000, 10000)}
    assert set(data["ratio"]) == names and set(data["better"].values()) <= {"a", "b", "="}
    for side in ("a", "b"):
        assert all(len(runs) == 2 and min(runs) > 0
                   for runs in data[side]["figures"].values())
        assert sorted(p.name for p in out.glob(f"{side}-*")) == [f"{side}-1", f"{side}-2"]
    for name in names:
        a, b = data["a"]["median"][name], data["b"]["median"][name]
        assert data["ratio"][name] == round(b / a, 3)


def test_compare_refuses_a_side_it_cannot_run(novalog_env) -> None:
    out = Path(novalog_env["NOVALOG_HOME"]).parent / "refused"
    result = subprocess.run([sys.executable, "-m", "novalog", "bench", "compare",
                             "NOVALOG_BROKER=kafka", "/no/such/checkout", "--output",
                             str(out)], env={**novalog_env, "COLUMNS": "300"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "neither KEY=VALUE settings nor a novalog checkout" in result.stderr
    assert not out.exists()
