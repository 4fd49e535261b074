"""`novalog bench compare A B`: two configurations, run alternately on one machine.

On a noisy 2-core VM the same scenario gives figures up to two times apart from one
run to the next, so an improvement is stated as a ratio measured in one session:
A, B, A, B, ... (alternating, so drift in the machine hits both), the median of each
side per figure, and B / A.

A side is either environment settings (`NOVALOG_BROKER=tansu`, several separated by
commas, optionally named `label:KEY=VALUE,...`) applied to this checkout's bench, or
the path of another checkout (`git worktree add ../before HEAD~1`): that checkout's
code then runs (its own `.venv` when it has one, else this one's packages with the
checkout first on PYTHONPATH), so "before / after a change" is measured by the code
of each.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from rich.table import Table

from novalog.bench import report

SCENARIOS = ("serial", "burst", "rate", "soak", "replay", "scheduler")


class SideResult(TypedDict):
    label: str
    config: str
    figures: dict[str, list[float]]  # figure -> its value in each round
    median: dict[str, float]


class CompareResult(TypedDict):
    scenario: str
    compared: str
    arguments: list[str]
    rounds: int
    a: SideResult
    b: SideResult
    ratio: dict[str, float]  # B / A of the medians
    better: dict[str, str]  # "a", "b" or "=" (within 2 %)
    machine: report.Machine


@dataclass(frozen=True)
class Side:
    label: str
    config: str
    command: list[str]  # the `novalog` to run
    env: dict[str, str]
    cwd: Path | None = None  # a checkout runs in its own directory (`-m` puts it first)

    @classmethod
    def parse(cls, spec: str, default_label: str) -> Side:
        """`[label:]KEY=VALUE[,KEY=VALUE]` or the path of a checkout."""
        label, sep, rest = spec.partition(":")
        if not sep or "=" in label or "/" in label:
            label, rest = default_label, spec
        if "=" in rest:
            env = {}
            for pair in rest.split(","):
                key, eq, value = pair.partition("=")
                if not eq or not key.strip():
                    raise ValueError(f"{spec!r}: expected KEY=VALUE[,KEY=VALUE...]")
                env[key.strip()] = value
            return cls(label, spec, [sys.executable, "-m", "novalog"], env)
        checkout = Path(rest).expanduser().resolve()
        if not (checkout / "novalog" / "__init__.py").exists():
            raise ValueError(f"{spec!r}: neither KEY=VALUE settings nor a novalog checkout")
        name = label if sep else checkout.name
        own = checkout / ".venv" / "bin" / "novalog"
        if own.exists():
            return cls(name, spec, [str(own)], {}, checkout)
        # this virtualenv's packages, that checkout's code (first on the path, for every
        # role the bench's stack starts too)
        return cls(name, spec, [sys.executable, "-m", "novalog"],
                   {"PYTHONPATH": str(checkout)}, checkout)


# Each figure, from a scenario's JSON, and whether more is better.
Figure = tuple[Callable[[Mapping[str, Any]], float | None], bool]


def _latency(p: str) -> Figure:
    return (lambda r: r["summary"]["latency_ms"][p]), False


LOAD_FIGURES: dict[str, Figure] = {
    "boots_per_second": ((lambda r: r["summary"]["boots_per_second"]), True),
    "latency_p50_ms": _latency("p50"),
    "latency_p99_ms": _latency("p99"),
    "cpu_ms_per_boot_roles": ((lambda r: r["cpu_ms_per_boot"]["roles"]), False),
    "cpu_ms_per_boot_all": ((lambda r: r["cpu_ms_per_boot"]["roles_and_infrastructure"]),
                            False),
}


def _decision_p99(row: int) -> Figure:
    return (lambda r: r["results"][row]["p99_ms"]), False


def figures_of(scenario: str, result: Mapping[str, Any]) -> dict[str, float]:
    """The figures compared for one scenario's JSON result (missing ones left out)."""
    table = _figures(scenario, result)
    values = {name: get(result) for name, (get, _more) in table.items()}
    return {k: float(v) for k, v in values.items() if v is not None}


def _figures(scenario: str, result: Mapping[str, Any]) -> dict[str, Figure]:
    if scenario == "replay":
        return {"events_per_second": ((lambda r: r["events_per_second"]), True)}
    if scenario == "scheduler":
        return {f"p99_ms_at_{row['hosts']}_hosts": _decision_p99(i)
                for i, row in enumerate(result["results"])}
    return LOAD_FIGURES


def run_side(side: Side, scenario: str, arguments: list[str], output: Path) -> dict[str, Any]:
    """One run of the scenario by that side's `novalog bench`; its JSON result."""
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **side.env}
    command = [*side.command, "bench", scenario, *arguments, "--output", str(output)]
    report.console.print(f"[bold]{side.label}[/bold]: {' '.join(command[-len(arguments) - 4:])}"
                         + (f"  ({side.config})" if side.env else ""))
    done = subprocess.run(command, env=env, cwd=side.cwd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side.label}: `novalog bench {scenario}` exited with "
                           f"{done.returncode}")
    loaded: dict[str, Any] = json.loads((output / f"{scenario}.json").read_text())
    return loaded


def compare(a: Side, b: Side, scenario: str, arguments: list[str], rounds: int,
            output: Path) -> CompareResult:
    """Run A and B alternately `rounds` times each and put their medians side by side
    (output/compare.json; each run's own files under output/compare/a-N, b-N)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"{scenario!r}: one of {', '.join(SCENARIOS)}")
    seen: dict[str, dict[str, list[float]]] = {"a": {}, "b": {}}
    more_is_better: dict[str, bool] = {}
    for n in range(1, rounds + 1):
        order = ((("a", a), ("b", b)) if n % 2 else (("b", b), ("a", a)))
        for key, side in order:
            run = run_side(side, scenario, arguments, output / "compare" / f"{key}-{n}")
            for name, (_get, more) in _figures(scenario, run).items():
                more_is_better[name] = more
            for name, value in figures_of(scenario, run).items():
                seen[key].setdefault(name, []).append(value)
    medians = {k: {n: statistics.median(v) for n, v in seen[k].items()} for k in seen}
    ratio, better = {}, {}
    for name in medians["a"].keys() & medians["b"].keys():
        va, vb = medians["a"][name], medians["b"][name]
        ratio[name] = round(vb / va, 3) if va else float("inf")
        if va == vb or (va and abs(vb / va - 1) < 0.02):
            better[name] = "="
        else:
            better[name] = "b" if (vb > va) == more_is_better[name] else "a"
    result: CompareResult = {
        "scenario": "compare", "compared": scenario, "arguments": arguments,
        "rounds": rounds, "machine": report.machine(), "ratio": ratio, "better": better,
        "a": {"label": a.label, "config": a.config, "figures": seen["a"],
              "median": medians["a"]},
        "b": {"label": b.label, "config": b.config, "figures": seen["b"],
              "median": medians["b"]}}
    path = output / "compare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def compare_table(result: CompareResult) -> Table:
    a, b = result["a"], result["b"]
    table = Table(title=f"{result['compared']} {' '.join(result['arguments'])}: "
                        f"{a['label']} vs {b['label']}, {result['rounds']} alternating rounds "
                        "each (median)")
    for col in ("figure", a["label"], b["label"], f"{b['label']} / {a['label']}", "better"):
        table.add_column(col, justify="left" if col == "figure" else "right",
                         no_wrap=col == "figure")
    for name in sorted(result["ratio"]):
        winner = result["better"][name]
        table.add_row(name, _show(a, name), _show(b, name), f"{result['ratio'][name]:g}",
                      {"a": a["label"], "b": b["label"]}.get(winner, "="))
    return table


def _show(side: SideResult, name: str) -> str:
    """The median, and the spread of the rounds when there are several."""
    runs = side["figures"][name]
    spread = f" [{min(runs):g}-{max(runs):g}]" if len(runs) > 1 else ""
    return f"{side['median'][name]:g}{spread}"
