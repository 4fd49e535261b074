"""`novalog volume ...`: block storage through the API, like any client (Cinder's
create / list / show / delete, Nova's attach / detach, and the volume's audit)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from novalog.client import ApiFailure, NovalogClient
from producers.cli import _run, console

volume_app = typer.Typer(help="Volumes: create, list, show, delete, attach, detach, history.")
VOLUME = Annotated[str, typer.Argument(help="Volume name or id.")]
WAIT = Annotated[bool, typer.Option(help="Wait until the volume's status settles.")]
SETTLED = {"available", "in-use", "error", "error_deleting"}


def _base(client: NovalogClient) -> str:
    return f"/volume/v3/{client.project_id}"


def find_volume(client: NovalogClient, ref: str) -> dict[str, Any]:
    """By id, else by exact name (one match), as the OpenStack clients find one."""
    try:
        found: dict[str, Any] = client.get(f"{_base(client)}/volumes/{ref}")["volume"]
        return found
    except ApiFailure as exc:
        if exc.status != 404:
            raise
    matches = client.get(f"{_base(client)}/volumes/detail", name=ref)["volumes"]
    if not matches:
        raise ApiFailure(404, f"No volume with a name or ID of '{ref}' exists.")
    if len(matches) > 1:
        raise ApiFailure(409, f"More than one volume exists with the name '{ref}'.")
    return dict(matches[0])


def _settle(client: NovalogClient, volume_id: str, gone_ok: bool = False,
            timeout: float = 120.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v: dict[str, Any] = client.get(f"{_base(client)}/volumes/{volume_id}")["volume"]
        except ApiFailure as exc:
            if exc.status == 404 and gone_ok:
                return None
            raise
        if v["status"] in SETTLED:
            return v
        time.sleep(0.2)
    raise ApiFailure(408, f"gave up waiting for volume {volume_id} after {timeout:.0f}s")


def _row(v: dict[str, Any]) -> list[str]:
    attached = ", ".join(f"{a['server_id']} on {a['device']}" for a in v["attachments"])
    return [v["id"], v["name"], v["status"], str(v["size"]), v["bootable"], attached]


@volume_app.command("create")
def create(name: Annotated[str, typer.Argument(help="The volume's name.")],
           size: Annotated[int, typer.Option(min=1, help="Size in GB.")],
           image: Annotated[str | None, typer.Option(help="Image to copy in (bootable).")] = None,
           wait: WAIT = False) -> None:
    """Create a volume, empty or from an image (Cinder's POST /volumes)."""
    def go(client: NovalogClient) -> None:
        body: dict[str, Any] = {"size": size, "name": name}
        if image:
            body["imageRef"] = client.find("image", image)["id"]
        v = client.request("POST", f"{_base(client)}/volumes", json={"volume": body})["volume"]
        v = (_settle(client, v["id"]) if wait else v) or v
        console.print(f"{v['id']}  {v['name']}  {v['status']}")
        if v["status"] == "error":
            raise typer.Exit(1)
    _run(go)


@volume_app.command("list")
def list_volumes() -> None:
    """The project's volumes: status, size, where attached."""
    def go(client: NovalogClient) -> None:
        table = Table("id", "name", "status", "size", "bootable", "attached to")
        for v in client.get(f"{_base(client)}/volumes/detail")["volumes"]:
            table.add_row(*_row(v))
        console.print(table)
    _run(go)


@volume_app.command("show")
def show(volume: VOLUME) -> None:
    """One volume, whole."""
    _run(lambda client: console.print_json(data=find_volume(client, volume)))


@volume_app.command("delete")
def delete(volume: VOLUME, wait: WAIT = False) -> None:
    """Delete a volume (refused while it is attached)."""
    def go(client: NovalogClient) -> None:
        v = find_volume(client, volume)
        client.request("DELETE", f"{_base(client)}/volumes/{v['id']}")
        if wait and _settle(client, v["id"], gone_ok=True) is not None:
            raise ApiFailure(500, f"volume {v['id']} could not be deleted")
        console.print(f"{v['id']}  {v['name']}  {'deleted' if wait else 'deleting'}")
    _run(go)


@volume_app.command("attach")
def attach(server: Annotated[str, typer.Argument(help="Server name or id.")], volume: VOLUME,
           wait: WAIT = False) -> None:
    """Attach a volume to a server (Nova's os-volume_attachments)."""
    def go(client: NovalogClient) -> None:
        s, v = client.find("server", server), find_volume(client, volume)
        answer = client.request("POST", f"/compute/v2.1/servers/{s['id']}/os-volume_attachments",
                                json={"volumeAttachment": {"volumeId": v["id"]}})
        settled = _settle(client, v["id"]) if wait else None
        device = answer["volumeAttachment"]["device"]
        console.print(f"{v['id']}  attached to {s['name']} as {device}"
                      + (f"  ({settled['status']})" if settled else ""))
        if settled and settled["status"] != "in-use":
            raise typer.Exit(1)
    _run(go)


@volume_app.command("detach")
def detach(server: Annotated[str, typer.Argument(help="Server name or id.")], volume: VOLUME,
           wait: WAIT = False) -> None:
    """Detach a volume from a server."""
    def go(client: NovalogClient) -> None:
        s, v = client.find("server", server), find_volume(client, volume)
        client.request("DELETE",
                       f"/compute/v2.1/servers/{s['id']}/os-volume_attachments/{v['id']}")
        settled = _settle(client, v["id"]) if wait else None
        console.print(f"{v['id']}  detached from {s['name']}"
                      + (f"  ({settled['status']})" if settled else ""))
    _run(go)


@volume_app.command("history")
def history(volume: VOLUME) -> None:
    """The volume's complete history straight from the volumes topic."""
    def go(client: NovalogClient) -> None:
        v = find_volume(client, volume)
        table = Table("occurred at", "event", "status", "attachments", "role@host",
                      "request id", title=f"audit of volume {v['name'] or v['id']}")
        for e in client.get(f"{_base(client)}/volumes/{v['id']}/audit")["events"]:
            table.add_row(e["occurred_at"][11:23], e["event_type"], e["status"] or "-",
                          " ".join(e["attachments"]), f"{e['role']}@{e['host']}",
                          e["request_id"])
        Console(width=max(console.width, 160)).print(table)
    _run(go)
