"""The `novalog` command: run the stack, inspect it, run one role.

Typer gives typed options, help text and shell completion; rich draws the tables.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from novalog import request_ids
from novalog.process import StackError, tcp_answers
from novalog.request_ids import configure_logging
from novalog.roles import ROLES, plan, run_role
from novalog.running import read_state, state_path, with_running_stack
from novalog.settings import Settings, SettingsError
from novalog.stack import (
    Supervisor,
    component_up,
    prepare_cloud,
    reset_embedded,
    stop_stack,
)

app = typer.Typer(help="novalog: OpenStack Nova's boot flow on an event log.",
                  no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)

EXIT_NOT_RUNNING = 3  # as LSB `status` does


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


MAX_AGENTS = 64  # compute processes `up` starts on one machine


@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d",
                                         help="Start in the background and return.")] = False,
    hosts: Annotated[int, typer.Option(
        min=0, max=1000, help="Simulated compute hosts (cmp1..cmpN); more than 64 share "
                              "agent processes (NOVALOG_COMPUTE_FLEETS).")] = 4,
    replicas: Annotated[int, typer.Option(min=1, max=8,
                                          help="Replicas of scheduler, conductor and "
                                               "projector.")] = 1,
    qemu_hosts: Annotated[int, typer.Option(
        "--qemu-hosts", min=0, max=16,
        help="Real QEMU compute hosts (qemu1..qemuN); `novalog hypervisor setup` first."
    )] = 0,
    qemu_uri: Annotated[list[str] | None, typer.Option(
        "--qemu-uri", help="libvirt URI of the QEMU hosts (repeat: the i-th for qemu<i>, "
                           "the last for the rest).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a detached start.")] = 120,
) -> None:
    """Start the broker, Postgres (embedded unless configured) and every role."""
    settings = _settings()
    if hosts > MAX_AGENTS and not settings.compute_fleets:
        err.print(f"[red]error:[/red] {hosts} hosts are {hosts} processes: set "
                  f"NOVALOG_COMPUTE_FLEETS (e.g. {-(-hosts // 100)}) beyond {MAX_AGENTS}")
        raise typer.Exit(2)
    if detach:
        _up_detached(settings, timeout, ["--hosts", str(hosts), "--replicas", str(replicas),
                                         "--qemu-hosts", str(qemu_hosts),
                                         *[a for u in qemu_uri or [] for a in ("--qemu-uri", u)]])
        return
    configure_logging()
    stopping: list[int] = []

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    uris = tuple(qemu_uri or ("qemu:///system",))
    supervisor = Supervisor(settings, plan(settings, hosts, replicas, qemu_hosts, uris),
                            prepare_cloud(hosts + qemu_hosts))
    try:
        supervisor.start()
    except (StackError, SettingsError, TimeoutError) as exc:
        raise _fail(exc) from None
    _print_status(settings)
    console.print("novalog is up. Ctrl-C (or `novalog down`) stops it.")
    try:
        supervisor.serve(lambda: bool(stopping))
    except StackError as exc:
        err.print(f"[red]error:[/red] {exc}")
        supervisor.shutdown()
        raise typer.Exit(1) from None
    console.print("stopping novalog...")
    supervisor.shutdown()
    console.print("novalog stopped.")


def _up_detached(settings: Settings, timeout: float, args: list[str]) -> None:
    log_path = settings.home / "logs" / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "novalog", "up", *args],
                                stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(settings)
        if state and state.get("ready") and state.get("supervisor_pid") == proc.pid:
            break
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            raise _fail(StackError(f"novalog did not start (exit {proc.returncode}):\n{tail}"))
        if time.monotonic() > deadline:
            proc.terminate()
            raise _fail(StackError(f"novalog was not ready after {timeout:.0f}s; see {log_path}"))
        time.sleep(0.1)
    _print_status(settings)
    console.print(f"novalog runs in the background (pid {proc.pid}, log {log_path}). "
                  "`novalog down` stops it.")


@app.command()
def down() -> None:
    """Stop a stack started with `novalog up` (detached or not)."""
    settings = _settings()
    if stop_stack(settings):
        console.print("novalog stopped.")
    else:
        console.print(f"novalog is not running (no {state_path(settings)}).")


def status_rows(settings: Settings) -> list[dict[str, Any]] | None:
    """One row per component of the running stack, with up / down; None when not running."""
    state = read_state(settings)
    if state is None:
        return None
    rows: list[dict[str, Any]] = []
    kinds = {c["kind"] for c in state["components"]}
    externals = [("broker", state.get("kafka_bootstrap_servers")),
                 ("postgres", state.get("database_url"))]
    for kind, address in externals:
        if kind not in kinds and address:
            host, port = _host_port(address)
            rows.append({"name": kind, "kind": f"{kind} (external)", "pid": None,
                         "address": address, "restarts": 0, "version": "",
                         "state": "up" if tcp_answers(host, port) else "down"})
    for component in state["components"]:
        rows.append({**component, "state": "up" if component_up(component) else "down"})
    return rows


def _host_port(address: str) -> tuple[str, int]:
    """host and port of a bootstrap list's first entry or of a libpq URL / conninfo."""
    if "=" in address or "://" in address:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(address)
        return str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)
    host, _, port = address.split(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port or 9092)


def _print_status(settings: Settings) -> bool:
    rows = status_rows(settings)
    if rows is None:
        console.print("novalog is not running.")
        return False
    table = Table(title="novalog")
    for col in ("component", "kind", "state", "address", "pid", "restarts"):
        table.add_column(col)
    for r in rows:
        colour = "green" if r["state"] == "up" else "red"
        kind = r.get("version") or r["kind"]
        table.add_row(r["name"], kind, f"[{colour}]{r['state']}[/{colour}]", r["address"],
                      str(r["pid"] or "-"), str(r["restarts"]))
    console.print(table)
    if not (read_state(settings) or {}).get("ready"):
        console.print("[yellow]still starting[/yellow]")
        return False
    return all(r["state"] == "up" for r in rows)


@app.command()
def reset(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
          ) -> None:
    """Wipe the embedded broker's log and Postgres's data under NOVALOG_HOME, on purpose:
    every server, event and offset is gone. Refused while the stack runs."""
    settings = _settings()
    if not yes:
        typer.confirm(f"Delete every event and server kept under {settings.home}?", abort=True)
    try:
        removed = reset_embedded(settings)
    except StackError as exc:
        raise _fail(exc) from None
    if removed:
        console.print("removed " + ", ".join(removed))
    else:
        console.print(f"nothing to remove under {settings.home}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
           ) -> None:
    """Each component and role: up / down, address, pid. Exit 3 when not all up."""
    settings = _settings()
    if as_json:
        rows = status_rows(settings)
        ready = bool((read_state(settings) or {}).get("ready"))
        console.print_json(json.dumps({"running": rows is not None, "ready": ready,
                                       "components": rows or []}))
        healthy = ready and rows is not None and all(r["state"] == "up" for r in rows)
    else:
        healthy = _print_status(settings)
    if not healthy:
        raise typer.Exit(EXIT_NOT_RUNNING)


@app.command()
def logs(request: Annotated[str, typer.Option(
        "--request", help="A request id, req-<uuid> (this request's or a caller's global "
                          "one): its lines in every role's log.")],
         ) -> None:
    """One request across every role's log ($NOVALOG_HOME/logs), in time order."""
    settings = _settings()
    if not request.startswith("req-"):
        raise _fail(ValueError(f"{request!r} is not a request id: they look like "
                               "req-<uuid> (X-OpenStack-Request-ID, os-instance-actions)"))
    found = request_ids.lines_of(settings.home / "logs", request)
    if not found:
        console.print(f"no log line of {settings.home / 'logs'} names {request}")
        raise typer.Exit(1)
    width = max(len(role) for role, _ in found)
    for role, line in found:
        print(f"{role:<{width}}  {line}")


@app.command()
def run(role: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(ROLES))}")],
        ) -> None:
    """Run one role in the foreground (what `novalog up` starts for each role)."""
    if role not in ROLES:
        raise _fail(KeyError(f"unknown role {role!r}; roles: {', '.join(sorted(ROLES))}"))
    try:
        run_role(role, _settings())
    except SettingsError as exc:
        raise _fail(exc) from None


hypervisor_app = typer.Typer(help="The real hypervisor: QEMU behind libvirt on this machine.",
                             no_args_is_help=True)
app.add_typer(hypervisor_app, name="hypervisor")


@hypervisor_app.command("setup")
def hypervisor_setup(
    uri: Annotated[str, typer.Option(help="qemu:///system (as root) or qemu:///session.")]
    = "qemu:///system",
) -> None:
    """Install QEMU and libvirt (Debian packages), start libvirtd / virtlogd without
    systemd and prove it with a throw-away domain. Idempotent; exit 2 when it cannot."""
    from novalog.hypervisor import SetupError, setup

    try:
        report, proof = setup(uri, lambda line: console.print(line))
    except SetupError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for what, changed in report.steps:
        console.print(f"{'[green]changed[/green]' if changed else 'ok     '}  {what}")
    console.print(proof)
    console.print("hypervisor ready" + ("" if report.changed else "; nothing changed"))


@app.command()
def bootstrap() -> None:
    """Publish the default catalog (flavors, cirros, private network, admin and demo)
    if the projection lacks it, and wait until it is projected."""
    from novalog.db import make_pool
    from novalog.roles import prepare_infrastructure
    from producers.catalog import bootstrap_catalog

    settings = with_running_stack(_settings())
    try:
        prepare_infrastructure(settings)
        pool = make_pool(settings)
        try:
            count = bootstrap_catalog(settings, pool)
        finally:
            pool.close()
    except (SettingsError, TimeoutError) as exc:
        raise _fail(exc) from None
    console.print(f"catalog: {count} entries published" if count else "catalog: complete")


@app.command()
def roles() -> None:
    """List the roles `novalog up` starts."""
    for role in ROLES.values():
        console.print(f"[bold]{role.name}[/bold]  {role.description}")


def _register_verbs() -> None:
    from novalog.bench import app as bench_app
    from novalog.deadletters import dead_letters_command
    from producers.cli import (
        boot,
        confirm_resize,
        console_log,
        delete,
        evacuate,
        image_app,
        live_migrate,
        migrate,
        reboot,
        rescue,
        resize,
        revert_resize,
        service_app,
        start,
        stop,
        unrescue,
    )
    from producers.volume_cli import volume_app
    from projections.cli import audit_command, list_servers, replay_command, show_server

    app.add_typer(bench_app, name="bench")
    app.add_typer(service_app, name="service")
    app.add_typer(volume_app, name="volume")
    app.add_typer(image_app, name="image")
    app.command("console-log")(console_log)
    app.command("dead-letters")(dead_letters_command)
    app.command("replay")(replay_command)
    app.command("audit")(audit_command)
    app.command("boot")(boot)
    app.command("delete")(delete)
    app.command("reboot")(reboot)
    app.command("stop")(stop)
    app.command("start")(start)
    app.command("rescue")(rescue)
    app.command("unrescue")(unrescue)
    app.command("resize")(resize)
    app.command("confirm-resize")(confirm_resize)
    app.command("revert-resize")(revert_resize)
    app.command("migrate")(migrate)
    app.command("live-migrate")(live_migrate)
    app.command("evacuate")(evacuate)
    app.command("list")(list_servers)
    app.command("show")(show_server)


_register_verbs()


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


@app.command()
def openrc(
    user: Annotated[str, typer.Option(help="admin (project admin) or demo (project demo).")]
    = "admin",
    clouds_yaml: Annotated[bool, typer.Option(
        "--clouds-yaml", help="Print a clouds.yaml (clouds novalog and novalog-demo) "
                              "instead of shell exports.")] = False,
) -> None:
    """What the stock OpenStack clients need: `eval "$(novalog openrc)"`, then `openstack`."""
    settings = _settings()
    passwords = {"admin": settings.admin_password, "demo": settings.demo_password}
    if user not in passwords:
        raise _fail(ValueError(f"unknown user {user!r}: use admin or demo"))
    base = settings.public_url or f"http://{settings.api_host}:{settings.api_port}"
    auth = {"auth_url": f"{base}/identity/v3", "user_domain_name": "Default",
            "project_domain_name": "Default"}
    if clouds_yaml:
        clouds = {name: {"auth": {**auth, "username": who, "password": passwords[who],
                                  "project_name": who},
                         "region_name": "RegionOne", "identity_api_version": 3}
                  for name, who in (("novalog", "admin"), ("novalog-demo", "demo"))}
        typer.echo(yaml.safe_dump({"clouds": clouds}, sort_keys=False), nl=False)
        return
    variables = {"OS_AUTH_URL": auth["auth_url"], "OS_USERNAME": user,
                 "OS_PASSWORD": passwords[user], "OS_PROJECT_NAME": user,
                 "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
                 "OS_IDENTITY_API_VERSION": "3", "OS_REGION_NAME": "RegionOne"}
    for name, value in variables.items():
        typer.echo(f"export {name}={shlex.quote(value)}")
