"""The no-Java fallback still works: a whole stack on Tansu boots a server to ACTIVE and
its projection equals a replay of the log (the suite proves the rest on Apache Kafka)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]



def test_a_stack_on_tansu_boots_and_replays(novalog_env: dict[str, str]) -> None:
    env = {**novalog_env, "NOVALOG_BROKER": "tansu", "OS_PASSWORD": "admin"}
    up = cli(env, "up", "--detach", "--hosts", "1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(cli(env, "status", "--json").stdout)
        broker = next(c for c in status["components"] if c["name"] == "broker")
        assert "tansu" in broker["version"] and broker["state"] == "up"
        booted = cli(env, "boot", "on-tansu", "--flavor", "m1.tiny", "--image", "cirros",
                     "--wait")
        assert booted.returncode == 0, booted.stdout + booted.stderr
        assert "ACTIVE" in cli(env, "list").stdout
        audit = cli(env, "audit", "on-tansu", "--json")
        assert audit.returncode == 0, audit.stderr
        entries = json.loads(audit.stdout)
        assert "InstanceSpawned" in [e["event_type"] for e in entries]
        assert (entries[-1]["vm_state"], entries[-1]["task_state"]) == ("active", None)
        replay = cli(env, "replay", "--verify")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert json.loads(cli(env, "dead-letters", "--json").stdout) == []
    finally:
        cli(env, "down")
