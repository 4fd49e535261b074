"""`novalog hypervisor setup` says why it cannot, exits 2, and edits only what it must."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from novalog import hypervisor
from novalog.cli import app


def setup_says(monkeypatch: pytest.MonkeyPatch, *args: str, uid: int = 1000,
               missing: list[str] | None = None) -> tuple[int, str]:
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    monkeypatch.setattr(hypervisor, "missing_packages", lambda: missing or [])
    monkeypatch.setattr(hypervisor, "check", lambda uri: f"{uri}: checked")
    done = CliRunner().invoke(app, ["hypervisor", "setup", *args])
    return done.exit_code, " ".join(done.output.split())


def test_a_normal_user_missing_packages_is_told_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = setup_says(monkeypatch, missing=["qemu-system-x86", "cpio"])
    assert code == 2
    assert "apt-get install --no-install-recommends qemu-system-x86 cpio" in out


def test_the_system_uri_needs_root_and_the_session_uri_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = setup_says(monkeypatch)
    assert code == 2 and "needs root" in out and "qemu:///session" in out
    code, out = setup_says(monkeypatch, "--uri", "qemu:///session")
    assert code == 0 and "qemu:///session: checked" in out and "nothing changed" in out


def test_an_unknown_uri_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = setup_says(monkeypatch, "--uri", "xen:///system", uid=0)
    assert code == 2 and "xen:///system" in out


def test_qemu_conf_keeps_its_other_lines_and_is_edited_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('# comment\nuser = "libvirt-qemu"\nvnc_listen = "0.0.0.0"\n')
    monkeypatch.setattr(hypervisor, "QEMU_CONF", conf)
    first, second = hypervisor.SetupReport(), hypervisor.SetupReport()
    hypervisor._qemu_as_root(first)
    text = conf.read_text()
    hypervisor._qemu_as_root(second)
    assert first.changed and not second.changed and conf.read_text() == text
    assert 'vnc_listen = "0.0.0.0"' in text and 'user = "libvirt-qemu"' not in text
    assert 'user = "root"' in text and 'group = "root"' in text


def test_a_daemon_that_never_answers_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(hypervisor.SetupError, match="did not answer"):
        hypervisor._daemon(hypervisor.SetupReport(), "true", tmp_path / "sock", timeout_s=0.5)
