"""`novalog list` and `novalog show`: the read-side CLI verbs, answered by the API."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from novalog.client import ApiFailure, NovalogClient
from novalog.running import with_running_stack
from novalog.settings import Settings, SettingsError
from novalog.views import Addresses

console = Console()
err = Console(stderr=True)
POWER_STATES = {0: "NOSTATE", 1: "Running", 3: "Paused", 4: "Shutdown", 6: "Crashed",
                7: "Suspended"}


def networks_text(addresses: Addresses) -> str:
    return "; ".join(f"{net}={', '.join(a['addr'] for a in addrs)}"
                     for net, addrs in addresses.items())


AS_OF_HELP = "A past moment: ISO 8601 (2026-11-22T10:00:00Z) or relative (-5m, -2h)."


def list_servers(
    all_projects: Annotated[bool, typer.Option("--all-projects",
                                               help="Every project's (admin).")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_HELP)] = None,
) -> None:
    """Servers of your project: status, task state, power state, networks, host."""
    client = NovalogClient.from_env(Settings.from_env())
    params = {"all_tenants": "1"} if all_projects else {}
    try:
        if as_of:
            answer = client.get("/novalog/v1/servers", as_of=as_of, **params)
            console.print(f"as of {answer['as_of']}")
            servers = answer["servers"]
        else:
            servers = client.get("/compute/v2.1/servers/detail", **params)["servers"]
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table()
    for col in ("ID", "Name", "Status", "Task State", "Power State", "Networks", "Host"):
        table.add_column(col)
    for s in servers:
        table.add_row(s["id"], s["name"], s["status"], s["OS-EXT-STS:task_state"] or "-",
                      POWER_STATES.get(s["OS-EXT-STS:power_state"], "?"),
                      networks_text(s["addresses"]), s.get("OS-EXT-SRV-ATTR:host") or "-")
    console.print(table)


def show_server(
    server: Annotated[str, typer.Argument(help="Server name or ID.")],
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_HELP)] = None,
) -> None:
    """One server's fields and its event history (as of a past moment with --as-of)."""
    client = NovalogClient.from_env(Settings.from_env())
    try:
        found = client.find("server", server)
        events = client.get(f"/novalog/v1/servers/{found['id']}/events")["events"]
        if as_of:
            answer = client.get(f"/novalog/v1/servers/{found['id']}", as_of=as_of)
            detail = answer["server"]
            console.print(f"as of {answer['as_of']}")
            moment = datetime.fromisoformat(answer["as_of"])
            events = [e for e in events
                      if datetime.fromisoformat(e["occurred_at"]) <= moment]
        else:
            detail = client.get(f"/compute/v2.1/servers/{found['id']}")["server"]
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    fields = Table(show_header=False)
    fields.add_column("Field")
    fields.add_column("Value")
    rows = {
        "id": detail["id"], "name": detail["name"], "status": detail["status"],
        "vm_state": detail["OS-EXT-STS:vm_state"],
        "task_state": detail["OS-EXT-STS:task_state"],
        "power_state": POWER_STATES.get(detail["OS-EXT-STS:power_state"], "?"),
        "host": detail.get("OS-EXT-SRV-ATTR:host"),
        "node": detail.get("OS-EXT-SRV-ATTR:hypervisor_hostname"),
        "addresses": networks_text(detail["addresses"]), "flavor": detail["flavor"]["id"],
        "image": detail["image"]["id"] if detail["image"] else "",
        "key_name": detail["key_name"], "metadata": detail["metadata"],
        "project_id": detail["tenant_id"], "user_id": detail["user_id"],
        "created": detail["created"], "updated": detail["updated"],
        "launched_at": detail["OS-SRV-USG:launched_at"], "fault": detail.get("fault"),
    }
    for key, value in rows.items():
        fields.add_row(key, "" if value is None else str(value))
    console.print(fields)
    history = Table(title="history")
    for col in ("time", "event", "vm_state", "task_state", "producer", "request id"):
        history.add_column(col)
    for e in events:
        history.add_row(e["occurred_at"][11:23], e["event_type"], e["vm_state"] or "-",
                        e["task_state"] or "None", e["producer"], e["request_id"])
    console.print(history)


def replay_command(
    verify: Annotated[bool, typer.Option(help="Compare every table with the live one.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the rebuilt schema to inspect it.")] = False,
) -> None:
    """Rebuild every projection from offset 0 into a fresh schema (the live one keeps serving).

    With --verify, exits 1 and names the tables and rows that differ.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from projections.replay import replay

    settings = Settings.from_env()
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("replay", total=None, rate="-")
            started = time.perf_counter()

            def report(done: int, total: int) -> None:
                elapsed = time.perf_counter() - started
                bar.update(task, completed=done, total=total,
                           rate=f"{done / elapsed:,.0f}" if elapsed > 0 else "-")

            result = replay(with_running_stack(settings), verify=verify, keep=keep,
                            progress=report)
    except (RuntimeError, SettingsError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"replayed {result.records:,} records in {result.seconds:.1f}s "
                  f"({result.records_per_second:,.0f}/s) into {result.schema}"
                  + ("" if keep else " (dropped)") + f"; {result.refused} refused by the fold")
    if not verify:
        return
    table = Table(title=f"replay vs live ({result.live_schema})")
    for col in ("table", "live rows", "replay rows", "live checksum", "replay checksum", ""):
        table.add_column(col)
    for t in result.tables:
        mark = "[green]equal[/green]" if t.equal else "[red]DIFFERENT[/red]"
        table.add_row(t.table, str(t.live_rows), str(t.replay_rows), t.live_checksum[:12],
                      t.replay_checksum[:12], mark)
    console.print(table)
    for t in result.tables:
        if not t.equal:
            err.print(f"[red]{t.table}[/red]: rows that differ (primary key): "
                      + ", ".join(t.differing))
    if not result.equal:
        raise typer.Exit(1)


def audit_command(
    server: Annotated[str | None, typer.Argument(help="Server name or ID.")] = None,
    since: Annotated[str | None, typer.Option(
        help="List every request since this moment (ISO 8601 or -1h) instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """A server's complete history straight from the topics, or every request since a moment."""
    import json

    client = NovalogClient.from_env(Settings.from_env())
    if (server is None) == (since is None):
        err.print("[red]error:[/red] name a SERVER, or give --since TIME")
        raise typer.Exit(2)
    try:
        if since is not None:
            answer = client.get("/novalog/v1/requests", since=since)
            if as_json:
                console.print_json(json.dumps(answer))
                return
            table = Table(title=f"requests since {answer['since']}")
            for col in ("started", "request id", "server", "outcome", "duration", "host",
                        "fault"):
                table.add_column(col)
            colours = {"active": "green", "error": "red", "building": "yellow"}
            for r in answer["requests"]:
                c = colours[r["outcome"]]
                table.add_row(r["started"][11:23], r["request_id"], r["server"],
                              f"[{c}]{r['outcome']}[/{c}]", f"{r['duration_s']:.3f}s",
                              r["host"] or "-", r["fault"] or "")
            console.print(table)
            return
        assert server is not None
        server_id = client.find("server", server)["id"]
        entries = client.get(f"/novalog/v1/servers/{server_id}/audit")["events"]
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(json.dumps(entries))
        return
    table = Table(title=f"audit of {server} ({server_id}), from the instances topic")
    for col in ("time", "event", "vm_state", "task_state", "by", "request id", "details"):
        table.add_column(col)
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e["details"].items() if v not in (None, []))
        table.add_row(e["occurred_at"][11:23], e["event_type"], e["vm_state"] or "-",
                      e["task_state"] or "None", f"{e['role']}@{e['host']}", e["request_id"],
                      details)
    console.print(table)
