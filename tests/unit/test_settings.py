"""Settings from the environment: defaults, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from novalog.kafka import Topics
from novalog.settings import Settings, SettingsError


def test_defaults_use_the_embedded_stack_and_novas_api_port() -> None:
    s = Settings.from_env({"HOME": "/home/x"})
    assert s.kafka_bootstrap_servers is None and s.database_url is None
    assert (s.api_port, s.broker_port, s.postgres_port) == (8774, 19092, 15432)
    assert (s.session_timeout_ms, s.heartbeat_interval_ms) == (6000, 1000)
    assert s.topic_prefix == "novalog"


def test_overrides_round_trip_through_a_child_environment() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://db/x",
           "NOVALOG_TOPIC_PREFIX": "prod.eu", "NOVALOG_PARTITIONS": "12",
           "NOVALOG_HOME": "/srv/novalog", "NOVALOG_DB_SCHEMA": "nova_eu"}
    s = Settings.from_env(env)
    assert s.partitions == 12 and s.home == Path("/srv/novalog")
    assert Settings.from_env(s.as_env()) == s


@pytest.mark.parametrize(("env", "message"), [
    ({"NOVALOG_PARTITIONS": "many"}, "NOVALOG_PARTITIONS='many' is not an integer"),
    ({"NOVALOG_PARTITIONS": "0"}, "NOVALOG_PARTITIONS=0 is outside 1..1000"),
    ({"NOVALOG_API_PORT": "70000"}, "NOVALOG_API_PORT=70000 is outside"),
    ({"NOVALOG_TOPIC_PREFIX": "a b"}, "NOVALOG_TOPIC_PREFIX='a b'"),
    ({"NOVALOG_DB_SCHEMA": "Robert'); DROP"}, "NOVALOG_DB_SCHEMA="),
    ({"NOVALOG_FETCH_WAIT_MS": "0"}, "NOVALOG_FETCH_WAIT_MS=0 is outside 1..10000"),
    ({"NOVALOG_LINGER_MS": "soon"}, "NOVALOG_LINGER_MS='soon' is not an integer"),
    ({"NOVALOG_BROKER_JIT": "c3"}, "NOVALOG_BROKER_JIT='c3': use c1 or c2"),
])
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_missing_infrastructure_says_how_to_get_it() -> None:
    with pytest.raises(SettingsError, match="novalog up"):
        Settings().require_bootstrap()
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings().require_database_url()


def test_topic_names_follow_the_design() -> None:
    t = Topics("novalog")
    assert t.core() == ["novalog.instances", "novalog.hosts", "novalog.catalog",
                        "novalog.network", "novalog.volumes", "novalog.dead-letters"]
    assert t.compute("cmp1") == "novalog.compute.cmp1"


def test_token_keys_rotate_without_invalidating_unexpired_tokens() -> None:
    from cryptography.fernet import Fernet

    from novalog.tokens import TokenService

    old, new = Fernet.generate_key(), Fernet.generate_key()
    token, ctx = TokenService([old]).issue("u", "p", ["member"])
    rotated = TokenService([new, old])  # the new key signs, the old one still verifies
    assert rotated.validate(token) == ctx
    fresh, _ = rotated.issue("u", "p", ["member"])
    assert TokenService([new]).validate(fresh).user_id == "u"
    with pytest.raises(ValueError):
        TokenService([new]).validate(token)  # once the old key is dropped, so are its tokens


@pytest.mark.parametrize(("raw", "message"), [
    ("10.0.0.0/33", "NOVALOG_PRIVATE_CIDR='10.0.0.0/33'"),
    ("10.0.0.1/24", "has host bits set"),
    ("10.0.0.0/30", "too small"),
])
def test_a_bad_private_cidr_is_refused(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"NOVALOG_PRIVATE_CIDR": raw})
    assert Settings.from_env({"NOVALOG_PRIVATE_CIDR": "10.8.0.0/16"}).private_cidr == \
        "10.8.0.0/16"


def test_every_role_setting_comes_from_settings() -> None:
    s = Settings.from_env({
        "NOVALOG_TOKEN_KEYS": " k1 ,k2,", "NOVALOG_TOKEN_TTL_S": "60",
        "NOVALOG_ADMIN_PASSWORD": "s3cret", "NOVALOG_MAX_ATTEMPTS": "5",
        "NOVALOG_BUILD_TIMEOUT_S": "30", "NOVALOG_HOST_SUBSET_SIZE": "2",
        "NOVALOG_COMPUTE_HOST": "cmp7", "NOVALOG_COMPUTE_VCPUS": "16",
        "NOVALOG_CPU_ALLOCATION_RATIO": "2.5", "NOVALOG_REPORT_INTERVAL_S": "1"})
    assert s.token_keys == ("k1", "k2") and s.token_ttl_s == 60
    assert (s.max_attempts, s.build_timeout_s, s.host_subset_size) == (5, 30.0, 2)
    assert (s.compute.require_hosts(), s.compute.vcpus, s.compute.cpu_allocation_ratio,
            s.report_interval_s) == (["cmp7"], 16, 2.5, 1.0)
    assert "s3cret" not in repr(s) and "k1" not in repr(s)  # secrets never in a log line
    with pytest.raises(SettingsError, match="NOVALOG_COMPUTE_HOST is not set"):
        Settings.from_env({}).compute.require_hosts()
    fleet = Settings.from_env({"NOVALOG_COMPUTE_HOST": "cmp1, cmp2,cmp3",
                               "NOVALOG_COMPUTE_FLEETS": "2"})
    assert fleet.compute.require_hosts() == ["cmp1", "cmp2", "cmp3"]
    assert fleet.as_env()["NOVALOG_COMPUTE_FLEETS"] == "2"
    with pytest.raises(SettingsError, match="names a host twice"):
        Settings.from_env({"NOVALOG_COMPUTE_HOST": "cmp1,cmp1"}).compute.require_hosts()
    with pytest.raises(SettingsError, match="NOVALOG_MAX_ATTEMPTS=0 is outside"):
        Settings.from_env({"NOVALOG_MAX_ATTEMPTS": "0"})
    with pytest.raises(SettingsError, match="NOVALOG_COMPUTE_MEMORY_MB=64 is outside"):
        Settings.from_env({"NOVALOG_COMPUTE_MEMORY_MB": "64"})


def test_the_public_url_is_an_http_base_or_refused() -> None:
    assert Settings.from_env({}).public_url is None
    assert Settings.from_env({"NOVALOG_PUBLIC_URL": "https://c.example:8443/nova/"}
                             ).public_url == "https://c.example:8443/nova"
    assert Settings.from_env({"NOVALOG_PUBLIC_URL": "http://10.0.0.5:8774"}
                             ).as_env()["NOVALOG_PUBLIC_URL"] == "http://10.0.0.5:8774"
    for bad in ("ftp://c.example", "c.example:8774", "http://c.example/?x=1", "http://"):
        with pytest.raises(SettingsError, match="NOVALOG_PUBLIC_URL"):
            Settings.from_env({"NOVALOG_PUBLIC_URL": bad})


def test_compute_microversions_are_parsed_as_nova_does() -> None:
    from novalog.web import ApiError, compute_microversion

    assert compute_microversion({}) == (2, 1)
    assert compute_microversion({"openstack-api-version": "image 2.5, compute 2.1"}) == (2, 1)
    assert compute_microversion({"x-openstack-nova-api-version": "latest"}) == (2, 1)
    for headers, status in (({"openstack-api-version": "compute 2.60"}, 406),
                            ({"x-openstack-nova-api-version": "2.0"}, 406),
                            ({"x-openstack-nova-api-version": "2"}, 400),
                            ({"openstack-api-version": "compute x.y"}, 400)):
        with pytest.raises(ApiError) as refused:
            compute_microversion(headers)
        assert refused.value.status == status


def test_simulated_hosts_are_spread_over_fleets_in_contiguous_runs() -> None:
    from novalog.roles import fleets, plan

    assert fleets(3, 0) == [["cmp1"], ["cmp2"], ["cmp3"]]
    assert fleets(5, 2) == [["cmp1", "cmp2", "cmp3"], ["cmp4", "cmp5"]]
    assert fleets(2, 8) == [["cmp1"], ["cmp2"]]
    spread = fleets(1000, 7)
    assert sum(map(len, spread)) == 1000 and max(map(len, spread)) - min(map(len, spread)) <= 1
    assert [h for f in spread for h in f] == [f"cmp{i}" for i in range(1, 1001)]
    computes = [r for r in plan(Settings.from_env({"NOVALOG_COMPUTE_FLEETS": "2"}), hosts=4)
                if r.role == "compute"]
    assert [(r.name, dict(r.env)["NOVALOG_COMPUTE_HOST"]) for r in computes] == [
        ("compute-fleet1", "cmp1,cmp2"), ("compute-fleet2", "cmp3,cmp4")]
    alone = [r.name for r in plan(Settings.from_env({}), hosts=2) if r.role == "compute"]
    assert alone == ["compute-cmp1", "compute-cmp2"]


def test_the_fetch_wait_is_500_on_kafka_20_on_tansu_unless_set_and_reaches_the_roles() -> None:
    assert Settings.from_env({}).fetch_wait == 500
    assert Settings.from_env({"NOVALOG_BROKER": "kafka"}).fetch_wait == 500
    assert Settings.from_env({"NOVALOG_BROKER": "tansu"}).fetch_wait == 20
    assert Settings.from_env({"NOVALOG_BROKER": "tansu",
                              "NOVALOG_FETCH_WAIT_MS": "5"}).fetch_wait == 5
    assert Settings.from_env({"NOVALOG_FETCH_WAIT_MS": "500"}).fetch_wait == 500
    child = Settings.from_env(Settings.from_env({"NOVALOG_FETCH_WAIT_MS": "500"}).as_env())
    assert child.fetch_wait == 500  # a role gets what `up` was given
    assert Settings.from_env(Settings.from_env({}).as_env()).fetch_wait_ms is None
