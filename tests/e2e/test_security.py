"""Security: revocation, lockout, members' limits, no secret in any log or event."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from novalog.kafka import scan_topic
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = f"Pa55-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("sec") / "home", hosts=1,
                       extra_env={"NOVALOG_ADMIN_PASSWORD": SECRET}) as c:
        yield c


def login(cloud: Cloud, user: str, password: str, project: str | None = None) -> tuple[int, str]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "password": password, "domain": {"name": "Default"}}}}}}
    if project:
        body["auth"]["scope"] = {"project": {"name": project}}
    response = cloud.http().post("/identity/v3/auth/tokens", json=body)
    return response.status_code, response.headers.get("X-Subject-Token", "")


def test_a_revoked_token_is_refused_and_members_revoke_only_their_own(cloud: Cloud) -> None:
    http = cloud.http()
    _, admin = login(cloud, "admin", SECRET, "admin")
    _, demo = login(cloud, "demo", "demo", "demo")
    _, demo2 = login(cloud, "demo", "demo", "demo")
    assert http.get("/compute/v2.1/servers", headers={"X-Auth-Token": demo}).status_code == 200
    forbidden = http.delete("/identity/v3/auth/tokens",
                            headers={"X-Auth-Token": demo, "X-Subject-Token": admin})
    assert forbidden.status_code == 403
    revoked = http.delete("/identity/v3/auth/tokens",
                          headers={"X-Auth-Token": demo, "X-Subject-Token": demo})
    assert revoked.status_code == 204
    assert http.get("/compute/v2.1/servers", headers={"X-Auth-Token": demo}).status_code == 401
    assert http.get("/compute/v2.1/servers", headers={"X-Auth-Token": demo2}).status_code == 200
    assert http.get("/compute/v2.1/servers", headers={"X-Auth-Token": admin}).status_code == 200


def test_members_get_403_on_admin_features(cloud: Cloud) -> None:
    _, demo = login(cloud, "demo", "demo", "demo")
    http = cloud.http()
    quota = http.put("/compute/v2.1/os-quota-sets/x", json={"quota_set": {"instances": 1}},
                     headers={"X-Auth-Token": demo})
    assert quota.status_code == 403
    forced = http.post("/compute/v2.1/servers", headers={"X-Auth-Token": demo}, json={
        "server": {"name": "f", "flavorRef": "1", "imageRef": cloud.image_id(),
                   "availability_zone": "nova:cmp1"}})
    assert forced.status_code == 403


def test_brute_force_locks_the_user_out(cloud: Cloud) -> None:
    codes = [login(cloud, "demo", f"guess-{n}", "demo")[0] for n in range(5)]
    assert codes == [401] * 5
    status, _ = login(cloud, "demo", "demo", "demo")  # even the right password, now
    assert status == 429
    response = cloud.http().post("/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {"name": "demo", "password": "demo"}}}}})
    assert "Too many failed authentication attempts" in response.json()["overLimit"]["message"]
    assert login(cloud, "admin", SECRET, "admin")[0] == 201  # other users are not affected


def test_oversized_and_malformed_bodies_are_400(cloud: Cloud) -> None:
    _, token = login(cloud, "admin", SECRET, "admin")
    http = cloud.http()
    big = http.post("/compute/v2.1/servers", content=b"{" + b" " * (2 << 20) + b"}",
                    headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    assert big.status_code == 400 and "too large" in big.json()["badRequest"]["message"]
    wrong_type = http.post("/compute/v2.1/servers", headers={"X-Auth-Token": token},
                           json={"server": {"name": ["x"], "flavorRef": "1"}})
    assert wrong_type.status_code == 400 and "name" in wrong_type.json()["badRequest"]["message"]


def test_no_password_or_token_appears_in_any_log_or_event(cloud: Cloud) -> None:
    _, token = login(cloud, "admin", SECRET, "admin")
    assert cloud.cli("boot", "sec", "--flavor", "m1.tiny", "--image", "cirros",
                     "--wait").returncode == 0  # the CLI logs in too
    secrets = [SECRET.encode(), token.encode(), b"demo\"}"]  # no JSON with a password in it
    for log in cloud.home.glob("logs/*.log"):
        text = log.read_bytes()
        for secret in secrets[:2]:
            assert secret not in text, f"{secret[:8]!r} in {log.name}"
    prefix = cloud.settings.topic_prefix
    for topic in ("instances", "hosts", "catalog", "network", "dead-letters", "compute.cmp1"):
        for msg in scan_topic(cloud.settings, f"{prefix}.{topic}"):
            for secret in secrets[:2]:
                assert secret not in (msg.value() or b""), f"a secret in {topic}"
    users = [m.value() or b"" for m in scan_topic(cloud.settings, f"{prefix}.catalog")
             if b"$argon2" in (m.value() or b"")]
    assert len(users) == 2  # only argon2 hashes travel, never the passwords
