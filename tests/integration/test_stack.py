"""`novalog up / status / down` as a user runs them: real subprocesses, real binaries."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from novalog.process import free_port
from tests.conftest import cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOVALOG = [sys.executable, "-m", "novalog"]


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = cli(env, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def wait_all_up(env: dict[str, str], proc: subprocess.Popen[str] | None = None,
                timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, state = status(env)
        if code == 0:
            return state
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"novalog up exited {proc.returncode}: {proc.stdout.read()}"
                                 if proc.stdout else "novalog up exited")
        assert time.monotonic() < deadline, f"not all up: {state}"
        time.sleep(0.3)


def tree_pids(state: dict[str, Any]) -> set[int]:
    """Every process of the stack: the components and all their descendants."""
    pids = set()
    for c in state["components"]:
        pids.add(c["pid"])
        with contextlib.suppress(psutil.NoSuchProcess):
            pids |= {p.pid for p in psutil.Process(c["pid"]).children(recursive=True)}
    return pids


def assert_all_gone(pids: set[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.1)
    assert not alive, f"orphans left: {[psutil.Process(p).cmdline() for p in alive]}"


def ports(env: dict[str, str]) -> list[int]:
    return [int(env[k]) for k in ("NOVALOG_BROKER_PORT", "NOVALOG_POSTGRES_PORT",
                                  "NOVALOG_API_PORT")]


def assert_ports_free(env: dict[str, str]) -> None:
    for port in ports(env):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_starts_everything_and_a_signal_stops_everything(novalog_env, sig) -> None:
    proc = subprocess.Popen([*NOVALOG, "up"], env=novalog_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        state = wait_all_up(novalog_env, proc)
        kinds = {c["name"]: c for c in state["components"]}
        assert {"broker", "postgres", "api"} <= set(kinds)
        assert all(c["state"] == "up" for c in state["components"])
        assert kinds["broker"]["address"] == f"127.0.0.1:{novalog_env['NOVALOG_BROKER_PORT']}"
        pids = tree_pids(state)
        assert len(pids) > 3  # postgres has its own children
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "novalog stopped." in out
    assert_all_gone(pids)
    assert_ports_free(novalog_env)
    assert not (Path(novalog_env["NOVALOG_HOME"]) / "stack.json").exists()


def test_detach_status_down(novalog_env) -> None:
    result = cli(novalog_env, "up", "--detach")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "runs in the background" in result.stdout
        code, state = status(novalog_env)
        assert code == 0 and state["running"]
        human = cli(novalog_env, "status")
        assert human.returncode == 0
        for name in ("broker", "postgres", "api"):
            assert name in human.stdout
        again = cli(novalog_env, "up", "--detach")
        assert again.returncode == 1 and "already running" in again.stderr
        pids = tree_pids(state)
    finally:
        down = cli(novalog_env, "down")
    assert down.returncode == 0 and "novalog stopped." in down.stdout
    assert_all_gone(pids)
    code, state = status(novalog_env)
    assert code == 3 and not state["running"]
    assert "not running" in cli(novalog_env, "down").stdout


def test_a_killed_supervisor_leaves_no_orphans(novalog_env) -> None:
    proc = subprocess.Popen([*NOVALOG, "up"], env=novalog_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        pids = tree_pids(wait_all_up(novalog_env, None))
    finally:
        proc.kill()
        proc.wait()
    assert_all_gone(pids)
    code, _ = status(novalog_env)
    assert code == 3  # stale state file: reported as down, not as up
    cli(novalog_env, "down")


def test_a_crashed_role_is_restarted_and_reported(novalog_env) -> None:
    assert cli(novalog_env, "up", "--detach").returncode == 0
    try:
        _, state = status(novalog_env)
        api = next(c for c in state["components"] if c["name"] == "api")
        os.kill(api["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            code, state = status(novalog_env)
            api = next(c for c in state["components"] if c["name"] == "api")
            if code == 0 and api["restarts"] == 1:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
    finally:
        cli(novalog_env, "down")


def _no_process_uses(home: str) -> None:
    leftovers = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            uses = home in " ".join(p.info["cmdline"] or []) or \
                (p.info["environ"] or {}).get("NOVALOG_HOME") == home
            if uses and p.pid != os.getpid():
                leftovers.append(p.info["cmdline"])
        except psutil.Error:
            pass
    assert not leftovers


def test_a_taken_port_is_a_clear_error_and_starts_nothing(novalog_env) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(novalog_env["NOVALOG_API_PORT"])))
        blocker.listen()
        result = cli(novalog_env, "up")
    assert result.returncode == 1
    assert f"port {novalog_env['NOVALOG_API_PORT']} on 127.0.0.1 is taken" in result.stderr
    assert "NOVALOG_API_PORT" in result.stderr
    _no_process_uses(novalog_env["NOVALOG_HOME"])


@pytest.mark.parametrize(("var", "value", "message"), [
    ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:{port}",
     "Kafka broker at 127.0.0.1:{port} does not answer"),
    ("DATABASE_URL", "postgresql://u:secret@127.0.0.1:{port}/db", "PostgreSQL at"),
])
def test_external_infrastructure_that_does_not_answer_is_a_clear_error(
        novalog_env, var, value, message) -> None:
    port = free_port()
    env = {**novalog_env, var: value.format(port=port)}
    result = cli(env, "up")
    assert result.returncode == 1
    assert message.format(port=port) in result.stderr.replace("\n", " ")
    assert "secret" not in result.stderr + result.stdout
    _no_process_uses(novalog_env["NOVALOG_HOME"])


def test_a_missing_tansu_binary_is_a_clear_error(novalog_env, tmp_path) -> None:
    env = {**novalog_env, "CALF_TANSU_BIN": str(tmp_path / "no-such-tansu"),
           "NOVALOG_BROKER": "tansu"}
    result = cli(env, "up")
    assert result.returncode == 1
    assert "the Tansu broker binary was not found" in result.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr.replace("\n", " ")


def test_bad_settings_are_a_clear_error(novalog_env) -> None:
    result = cli({**novalog_env, "NOVALOG_PARTITIONS": "many"}, "status")
    assert result.returncode == 2
    assert "NOVALOG_PARTITIONS='many' is not an integer" in result.stderr
    unknown = cli(novalog_env, "run", "nonsense")
    assert unknown.returncode == 1 and "unknown role 'nonsense'" in unknown.stderr
    broker = cli({**novalog_env, "NOVALOG_BROKER": "rabbitmq"}, "up")
    assert broker.returncode == 2
    assert "NOVALOG_BROKER='rabbitmq': use kafka or tansu" in broker.stderr
