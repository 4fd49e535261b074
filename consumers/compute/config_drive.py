"""The config drive: what Nova's InstanceMetadata writes for a guest, on an ISO 9660 disk
labelled `config-2` (Joliet and Rock Ridge names, as Nova's genisoimage -J -r), made
with pycdlib (pure Python: no genisoimage process per boot).

The layout is Nova's OpenStack one: openstack/<version>/meta_data.json, user_data,
network_data.json, vendor_data.json and vendor_data2.json for each metadata version
Nova serves, and `latest`. Nova's ec2/ tree is left out (novalog has no EC2 API).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import os
import re
from pathlib import Path

import pycdlib

from schemas import payloads

LABEL = "config-2"
VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
            "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest")


def hostname(name: str) -> str:
    """Nova's sanitize_hostname: lower case, letters, digits and hyphens, at most 63."""
    cleaned = re.sub(r"[ _.]", "-", name.lower())
    cleaned = re.sub(r"[^a-z0-9-]", "", cleaned).strip("-")[:63].rstrip("-")
    return cleaned or "server"


def meta_data(cmd: payloads.BuildAndRunInstance, zone: str,
              admin_password: str | None) -> dict[str, object]:
    # (.get: a command claimed before these fields existed, rebuilt after a move)
    key_name, key_data = cmd["key_name"], cmd.get("key_data")
    data: dict[str, object] = {
        "uuid": cmd["instance_uuid"], "meta": cmd["metadata"], "hostname": hostname(cmd["name"]),
        "name": cmd["name"], "launch_index": cmd.get("launch_index", 0), "availability_zone": zone,
        "project_id": cmd["project_id"],
        "random_seed": base64.b64encode(os.urandom(512)).decode(),
        "devices": [], "dedicated_cpus": [],
    }
    if key_name and key_data:
        data["public_keys"] = {key_name: key_data}
        data["keys"] = [{"name": key_name, "type": "ssh", "data": key_data}]
    if admin_password is not None:
        data["admin_pass"] = admin_password
    return data


def network_data(cmd: payloads.BuildAndRunInstance,
                 ports: list[payloads.Port]) -> dict[str, object]:
    """Nova's network_data.json: one link per port, its IPv4 network and default route."""
    nets = {n["network_id"]: n for n in cmd["networks"]}
    links, networks = [], []
    for index, port in enumerate(ports):
        link = f"tap{port['port_id'][:11]}"
        links.append({"id": link, "vif_id": port["port_id"], "type": "ethernet",
                      "ethernet_mac_address": port["mac_address"], "mtu": 1500})
        net = nets.get(port["network_id"])
        if net is None:
            continue
        cidr = ipaddress.ip_network(net["cidr"])
        networks.append({
            "id": f"network{index}", "type": "ipv4", "link": link,
            "ip_address": port["ip_address"], "netmask": str(cidr.netmask),
            "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                        "gateway": net["gateway_ip"]}] if net["gateway_ip"] else [],
            "network_id": port["network_id"], "services": []})
    return {"links": links, "networks": networks, "services": []}


def files(cmd: payloads.BuildAndRunInstance, ports: list[payloads.Port], zone: str,
          admin_password: str | None) -> dict[str, bytes]:
    """Path on the drive -> content."""
    one = {
        "meta_data.json": json.dumps(meta_data(cmd, zone, admin_password)).encode(),
        "network_data.json": json.dumps(network_data(cmd, ports)).encode(),
        "vendor_data.json": b"{}", "vendor_data2.json": b"{}",
    }
    if cmd["user_data"]:
        one["user_data"] = base64.b64decode(cmd["user_data"])
    return {f"openstack/{v}/{name}": data for v in VERSIONS for name, data in one.items()}


def write(path: Path, content: dict[str, bytes]) -> None:
    """The ISO at `path`, whole or not at all (written aside, then renamed)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    names: dict[str, str] = {"": ""}  # the drive's directory -> its ISO 9660 name

    def directory(parts: list[str]) -> str:
        key = "/".join(parts)
        if key not in names:
            parent = directory(parts[:-1])
            names[key] = f"{parent}/D{len(names)}"
            iso.add_directory(names[key], rr_name=parts[-1], joliet_path=f"/{key}")
        return names[key]

    for number, (name, data) in enumerate(sorted(content.items())):
        parts = name.split("/")
        parent = directory(parts[:-1])
        iso.add_fp(io.BytesIO(data), len(data), f"{parent}/F{number}.;1", rr_name=parts[-1],
                   joliet_path=f"/{name}")
    part = path.with_suffix(".part")
    iso.write(str(part))
    iso.close()
    part.replace(path)


def read(path: Path) -> dict[str, bytes]:
    """Every file on a config drive by its (Rock Ridge) path: what a guest would mount."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = {}
        for top, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                full = f"{top.rstrip('/')}/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=full)
                out[full.lstrip("/")] = buf.getvalue()
        return out
    finally:
        iso.close()


def volume_label(path: Path) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return str(iso.pvd.volume_identifier.decode()).strip()
    finally:
        iso.close()
