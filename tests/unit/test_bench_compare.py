"""`novalog bench compare`: how a side is named, which figures are compared, which is
better. The runs themselves are exercised end to end in tests/e2e/test_bench.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from novalog.bench.compare import Side, figures_of

ROOT = Path(__file__).resolve().parents[2]


def test_a_side_is_settings_or_a_checkout() -> None:
    tansu = Side.parse("tansu:NOVALOG_BROKER=tansu,NOVALOG_POLL_TIMEOUT_MS=50", "A")
    assert (tansu.label, tansu.env) == ("tansu", {"NOVALOG_BROKER": "tansu",
                                                  "NOVALOG_POLL_TIMEOUT_MS": "50"})
    assert Side.parse("NOVALOG_BROKER=kafka", "B").label == "B"
    here = Side.parse(str(ROOT), "A")
    assert here.label == ROOT.name
    if not (ROOT / ".venv" / "bin" / "novalog").exists():
        assert here.command == [sys.executable, "-m", "novalog"]
        assert here.env == {"PYTHONPATH": str(ROOT)}
    assert here.cwd == ROOT  # `python -m` puts the working directory first on the path
    assert Side.parse(f"before:{ROOT}", "A").label == "before"


@pytest.mark.parametrize("spec", ["/nonexistent/checkout", "NOVALOG_BROKER", "=x",
                                  str(ROOT / "docs")])
def test_a_side_that_is_neither_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Side.parse(spec, "A")


def test_the_figures_of_each_scenario() -> None:
    load = {"summary": {"boots_per_second": 24.4, "latency_ms": {"p50": 900.0, "p99": None}},
            "cpu_ms_per_boot": {"roles": 30.0, "roles_and_infrastructure": 68.0}}
    assert figures_of("burst", load) == {"boots_per_second": 24.4, "latency_p50_ms": 900.0,
                                         "cpu_ms_per_boot_roles": 30.0,
                                         "cpu_ms_per_boot_all": 68.0}
    assert figures_of("replay", {"events_per_second": 5105}) == {"events_per_second": 5105}
    sched = {"results": [{"hosts": 10, "p99_ms": 0.1}, {"hosts": 10000, "p99_ms": 2.4}]}
    assert figures_of("scheduler", sched) == {"p99_ms_at_10_hosts": 0.1,
                                              "p99_ms_at_10000_hosts": 2.4}
