"""`novalog boot`: the write-side CLI verb. It goes through the API like any client.

With --wait it follows each server's events as they are projected and prints
every task-state transition, with a progress bar over the servers, and exits 1
if any server ends in ERROR (printing its fault).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from novalog.client import ApiFailure, NovalogClient
from novalog.settings import Settings
from novalog.views import ServerRefs, ServerView
from producers.servers import ReservationCreated, ServerCreated

console = Console()
err = Console(stderr=True)


def _server_ids(client: NovalogClient, created: ServerCreated | ReservationCreated,
                count: int) -> list[str]:
    if "server" in created:
        return [created["server"]["id"]]
    reservation = created["reservation_id"]
    deadline = time.monotonic() + 15
    while True:  # a multi-create answers with its reservation id only, as in Nova
        listed: ServerRefs = client.get("/compute/v2.1/servers", reservation_id=reservation)
        servers = listed["servers"]
        if len(servers) >= count or time.monotonic() > deadline:
            return [s["id"] for s in servers]
        time.sleep(0.1)


def follow(client: NovalogClient, ids: list[str], names: dict[str, str],
           timeout: float) -> dict[str, ServerView]:
    """Print each server's transitions until every one is ACTIVE or ERROR."""
    seen = dict.fromkeys(ids, 0)
    final: dict[str, ServerView] = {}
    deadline = time.monotonic() + timeout
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("booting", total=len(ids))
        while len(final) < len(ids):
            if time.monotonic() > deadline:
                raise ApiFailure(408, f"gave up waiting after {timeout:.0f}s")
            for server_id in ids:
                if server_id in final:
                    continue
                events = client.get(f"/novalog/v1/servers/{server_id}/events",
                                    after=seen[server_id])["events"]
                for e in events:
                    seen[server_id] = e["seq"]
                    state = e["task_state"] if e["vm_state"] == "building" else e["vm_state"]
                    progress.console.print(f"{e['occurred_at'][11:23]}  {names[server_id]}  "
                                           f"{e['event_type']:<34}{state}")
                    if e["vm_state"] in ("active", "error"):
                        final[server_id] = client.get(
                            f"/compute/v2.1/servers/{server_id}")["server"]
                        progress.advance(task)
            time.sleep(0.1)
    return final


def boot(
    name: Annotated[str, typer.Argument(help="Server name (-1, -2... appended with --count).")],
    image: Annotated[str, typer.Option(help="Image name or id.")],
    flavor: Annotated[str, typer.Option(help="Flavor name or id.")] = "m1.tiny",
    network: Annotated[list[str] | None, typer.Option(
        help="Network name or id (repeatable; default: private).")] = None,
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many servers.")] = 1,
    boot_from_volume: Annotated[int | None, typer.Option(
        min=1, help="Boot from a new volume of this many GB made from the image.")] = None,
    delete_on_termination: Annotated[bool, typer.Option(
        help="With --boot-from-volume: the volume goes with the server.")] = False,
    wait: Annotated[bool, typer.Option(help="Follow the build until ACTIVE or ERROR.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 300,
) -> None:
    """Boot servers through the API (POST /servers)."""
    client = NovalogClient.from_env(Settings.from_env())
    try:
        f = client.find("flavor", flavor)
        i = client.find("image", image)
        nets = [{"uuid": client.find("network", n)["id"]} for n in network or []]
        body: dict[str, Any] = {"server": {
            "name": name, "flavorRef": f["id"], "imageRef": i["id"], "min_count": count,
            "max_count": count, "networks": nets or "auto",
            **({"return_reservation_id": True} if count > 1 else {})}}
        if boot_from_volume:  # what openstack server create --boot-from-volume sends
            body["server"]["imageRef"] = ""
            body["server"]["block_device_mapping_v2"] = [{
                "uuid": i["id"], "boot_index": 0, "source_type": "image",
                "destination_type": "volume", "volume_size": boot_from_volume,
                "delete_on_termination": delete_on_termination}]
        created: ServerCreated | ReservationCreated = client.request(
            "POST", "/compute/v2.1/servers", json=body)
        ids = _server_ids(client, created, count)
        names = {s: (name if count == 1 else f"{name}-{n + 1}") for n, s in enumerate(ids)}
        if not wait:
            for server_id in ids:
                console.print(f"{server_id}  {names[server_id]}  BUILD")
            return
        final = follow(client, ids, names, timeout)
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    failed = {s: v for s, v in final.items() if v["status"] == "ERROR"}
    for server_id, server in final.items():
        colour = "red" if server_id in failed else "green"
        console.print(f"[{colour}]{server['status']}[/{colour}]  {server['name']}  {server_id}")
    for server in failed.values():
        fault = server.get("fault", {})
        err.print(f"[red]{server['name']}: {fault.get('message', 'no fault recorded')}[/red]")
    if failed:
        raise typer.Exit(1)


def follow_action(client: NovalogClient, server_id: str, name: str, until: set[str],
                  after: int, timeout: float) -> str:
    """Print the server's events after `after` until one leaves it in a vm_state of `until`
    with no task in progress; returns that vm_state."""
    deadline = time.monotonic() + timeout
    while True:
        for e in client.get(f"/novalog/v1/servers/{server_id}/events", after=after)["events"]:
            after = e["seq"]
            console.print(f"{e['occurred_at'][11:23]}  {name}  {e['event_type']:<34}"
                          f"{e['vm_state']}/{e['task_state'] or '-'}")
            if e["vm_state"] in until and e["task_state"] is None:
                return str(e["vm_state"])
        if time.monotonic() > deadline:
            raise ApiFailure(408, f"gave up waiting after {timeout:.0f}s")
        time.sleep(0.1)


def last_seq(client: NovalogClient, server_id: str) -> int:
    events = client.get(f"/novalog/v1/servers/{server_id}/events")["events"]
    return int(events[-1]["seq"]) if events else 0


def delete(
    server: Annotated[str, typer.Argument(help="Server name or id.")],
    wait: Annotated[bool, typer.Option(help="Follow the delete until the server is gone.")]
    = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 120,
) -> None:
    """Delete a server (DELETE /servers/{id}), from any state."""
    client = NovalogClient.from_env(Settings.from_env())
    try:
        found = client.find("server", server)
        after = last_seq(client, found["id"])
        client.request("DELETE", f"/compute/v2.1/servers/{found['id']}")
        if not wait:
            console.print(f"{found['id']}  {found['name']}  deleting")
            return
        follow_action(client, found["id"], found["name"], {"deleted"}, after, timeout)
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]DELETED[/green]  {found['name']}  {found['id']}")


service_app = typer.Typer(help="Services: list, disable / enable a compute host, delete one.")


def _client() -> NovalogClient:
    return NovalogClient.from_env(Settings.from_env())


def _run(action: Callable[[NovalogClient], None]) -> None:
    try:
        action(_client())
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@service_app.command("list")
def service_list() -> None:
    """Every service: binary, host, zone, status, state, last update (GET /os-services)."""
    def show(client: NovalogClient) -> None:
        table = Table("id", "binary", "host", "zone", "status", "state", "updated at",
                      "disabled reason")
        for s in client.get("/compute/v2.1/os-services")["services"]:
            table.add_row(str(s["id"]), s["binary"], s["host"], s["zone"], s["status"],
                          s["state"], (s["updated_at"] or "-")[:19], s["disabled_reason"] or "")
        Console(width=max(console.width, 150)).print(table)  # never cut a reason short
    _run(show)


@service_app.command("disable")
def service_disable(
    host: Annotated[str, typer.Argument(help="The compute host.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the service).")] = None,
) -> None:
    """Disable a compute host's service: it gets no new builds, its servers stay managed."""
    action = "disable-log-reason" if reason else "disable"
    _run(lambda c: console.print(c.request("PUT", f"/compute/v2.1/os-services/{action}", json={
        "host": host, "binary": "nova-compute",
        **({"disabled_reason": reason} if reason else {})})["service"]))


@service_app.command("enable")
def service_enable(host: Annotated[str, typer.Argument(help="The compute host.")]) -> None:
    """Enable a compute host's service again."""
    _run(lambda c: console.print(c.request("PUT", "/compute/v2.1/os-services/enable", json={
        "host": host, "binary": "nova-compute"})["service"]))


@service_app.command("delete")
def service_delete(
    host: Annotated[str, typer.Argument(help="The host.")],
    binary: Annotated[str, typer.Option(help="Which service of the host.")] = "nova-compute",
) -> None:
    """Delete a service (refused while a compute host still has servers)."""
    def delete_one(client: NovalogClient) -> None:
        services = client.get("/compute/v2.1/os-services", host=host, binary=binary)
        if not services["services"]:
            raise ApiFailure(404, f"Could not find binary {binary} on host {host}.")
        client.request("DELETE", f"/compute/v2.1/os-services/{services['services'][0]['id']}")
        console.print(f"deleted {binary} on {host}")
    _run(delete_one)


def _act(server: str, body: dict[str, object], until: str | set[str], wait: bool,
           timeout: float, ends: set[str] | None = None) -> None:
    """POST the action; with `wait`, follow it until the server is in a vm_state of
    `until` (success) or of `ends` (error, or a move rolled back) with no task."""
    expected = {until} if isinstance(until, str) else until
    client = _client()
    try:
        found = client.find("server", server)
        after = last_seq(client, found["id"])
        answer = client.request("POST", f"/compute/v2.1/servers/{found['id']}/action",
                                json=body)
        password = answer.get("adminPass") if isinstance(answer, dict) else None
        if password:
            console.print(f"adminPass: {password}")
        if not wait:
            console.print(f"{found['id']}  {found['name']}  accepted")
            return
        state = follow_action(client, found["id"], found["name"],
                              expected | {"error"} | (ends or set()), after, timeout)
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    shown = client.get(f"/compute/v2.1/servers/{found['id']}")["server"]
    console.print(f"[green]{shown['status']}[/green]  {found['name']}  {found['id']}")
    given_up = [e["payload"]["reason"] for e in client.get(
        f"/novalog/v1/servers/{found['id']}/events", after=after)["events"]
        if e["event_type"] == "InstanceMigrationFailed"]
    if state not in expected or given_up:  # a live move given up is ACTIVE where it was
        fault = given_up[-1] if given_up else shown.get("fault", {}).get("message")
        if fault:
            err.print(f"[red]{fault}[/red]", soft_wrap=True)
        raise typer.Exit(1)


WAIT = Annotated[bool, typer.Option(help="Follow the action until it is done.")]
TIMEOUT = Annotated[float, typer.Option(help="Seconds --wait waits at most.")]
SERVER = Annotated[str, typer.Argument(help="Server name or id.")]


def reboot(server: SERVER, hard: Annotated[bool, typer.Option(
        help="Destroy and start the domain (also from SHUTOFF or ERROR).")] = False,
           wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Reboot a server (SOFT from ACTIVE; --hard as Nova allows)."""
    _act(server, {"reboot": {"type": "HARD" if hard else "SOFT"}}, "active", wait, timeout)


def stop(server: SERVER, wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Shut a server off (os-stop): SHUTOFF, its resources kept."""
    _act(server, {"os-stop": None}, "stopped", wait, timeout)


def start(server: SERVER, wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Start a stopped server (os-start)."""
    _act(server, {"os-start": None}, "active", wait, timeout)


BACK = {"active", "stopped"}  # where a move that was given up leaves the server


def rescue(server: SERVER, image: Annotated[str | None, typer.Option(
        help="Image id to boot the rescue disk from (default: the server's own).")] = None,
           wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Boot a server from a rescue disk, its own disk attached second (RESCUE)."""
    _act(server, {"rescue": {"rescue_image_ref": image} if image else None}, "rescued",
           wait, timeout)


def unrescue(server: SERVER, wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Boot a rescued server from its own disk again."""
    _act(server, {"unrescue": None}, "active", wait, timeout)


def resize(server: SERVER, flavor: Annotated[str, typer.Argument(help="Flavor name or id.")],
           wait: WAIT = False, timeout: TIMEOUT = 300) -> None:
    """Resize a server to another flavor, on another host: VERIFY_RESIZE until
    confirm-resize or revert-resize (or the auto-confirm window)."""
    client = _client()
    try:
        flavor_id = client.find("flavor", flavor)["id"]
    except ApiFailure as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    _act(server, {"resize": {"flavorRef": flavor_id}}, "resized", wait, timeout, BACK)


def confirm_resize(server: SERVER, wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Keep the resized server: its old host lets go of it."""
    _act(server, {"confirmResize": None}, BACK, wait, timeout)


def revert_resize(server: SERVER, wait: WAIT = False, timeout: TIMEOUT = 120) -> None:
    """Go back to the old flavor on the old host."""
    _act(server, {"revertResize": None}, BACK, wait, timeout)


HOST = Annotated[str | None, typer.Option(help="Destination host (admin); default: the "
                                               "scheduler's choice.")]


def migrate(server: SERVER, wait: WAIT = False, timeout: TIMEOUT = 300) -> None:
    """Cold-migrate a server (admin): the resize path with the same flavor, to the
    scheduler's choice of another host (a destination is microversion 2.56's)."""
    _act(server, {"migrate": None}, "resized", wait, timeout, BACK)


def live_migrate(server: SERVER, host: HOST = None, wait: WAIT = False,
                 timeout: TIMEOUT = 300) -> None:
    """Live-migrate a running server (admin): it keeps running and keeps its addresses."""
    _act(server, {"os-migrateLive": {"host": host, "block_migration": "auto"}}, "active",
           wait, timeout)


def evacuate(server: SERVER, host: HOST = None, wait: WAIT = False,
             timeout: TIMEOUT = 300) -> None:
    """Rebuild a server of a down host on another one (admin)."""
    body: dict[str, object] = {"onSharedStorage": False}
    if host:
        body["host"] = host
    _act(server, {"evacuate": body}, BACK, wait, timeout)


image_app = typer.Typer(help="Images beyond Glance's API: the tiny real guest.",
                        no_args_is_help=True)


@image_app.command("build-tiny")
def build_tiny(register: Annotated[bool, typer.Option(
        help="Register it in the running cloud's image catalog (as admin, public).")]
        = True) -> None:
    """Build a bootable guest from Debian packages (kernel + busybox initramfs that
    prints its uuid and name, then stays up) and register it as `tiny`."""
    from producers.tiny_image import BuildError, build
    from producers.tiny_image import register as register_tiny

    settings = Settings.from_env()
    try:
        files = build(settings.home / "build" / "tiny", lambda line: console.print(line))
        console.print(f"kernel {files.kernel} ({files.kernel.stat().st_size >> 20} MiB), "
                      f"initramfs {files.ramdisk} ({files.ramdisk.stat().st_size >> 10} KiB)")
        if not register:
            return
        try:
            image_id, changed = register_tiny(_client(), files)
        except httpx.TransportError as exc:
            raise BuildError(f"the API does not answer ({exc}): `novalog up` first, or "
                             "--no-register") from None
    except BuildError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"image tiny {image_id} " + ("registered" if changed else
                                                "already registered; nothing changed"))


def _new_part(seen: str, text: str) -> str:
    """What `text` (the console's last 100 KiB now) adds to `seen` (the last read): the
    window may have moved on, so the end of the last read is looked for in it."""
    if text.startswith(seen):
        return text[len(seen):]
    tail = seen[-256:]
    at = text.rfind(tail) if tail else -1
    return text[at + len(tail):] if at >= 0 else text


def console_log(server: SERVER, lines: Annotated[int | None, typer.Option(
        "--lines", help="Only the last N lines (Nova's `length`).")] = None,
                follow: Annotated[bool, typer.Option(
                    "--follow", "-f", help="Keep printing what the guest prints.")] = False,
                interval: Annotated[float, typer.Option(
                    help="Seconds between two reads with --follow.")] = 1.0) -> None:
    """The guest's serial console, as `openstack console log show` reads it."""
    def show(client: NovalogClient) -> None:
        found = client.find("server", server)
        path = f"/compute/v2.1/servers/{found['id']}/action"

        def read(length: int | None) -> str:
            body = {"os-getConsoleOutput": {"length": length}}
            return str(client.request("POST", path, json=body)["output"])

        typer.echo(read(lines), nl=False)
        seen = read(None) if follow else ""
        while follow:
            time.sleep(interval)
            text = read(None)
            typer.echo(_new_part(seen, text), nl=False)
            seen = text

    _run(show)
