"""Login, sessions, roles, enrollment tokens and enrollment, and credential separation."""

from __future__ import annotations

import pytest
from tests.helpers.server import ADMIN_PASSWORD, Harness

from roost.server import auth
from roost.server.catalog.models import User
from roost.server.catalog.queries import users
from roost.server.config import ServerSettings
from roost.server.security import hash_password


def enroll_body(token: str, name: str = "fs1") -> dict[str, str]:
    return {"token": token, "name": name, "hostname": "h", "os": "linux", "version": "1"}


def test_login_returns_a_token_that_opens_admin_routes(server: Harness) -> None:
    reply = server.client.post(
        "/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert reply.status_code == 200
    assert reply.json()["expires_at"] == "2026-04-01T12:00:00Z"  # 30-day test sessions
    headers = {"Authorization": f"Bearer {reply.json()['token']}"}
    assert server.client.get("/api/v1/agents", headers=headers).status_code == 200


@pytest.mark.parametrize("username", ["admin", "nobody"])
def test_wrong_login_is_refused_the_same_way(server: Harness, username: str) -> None:
    reply = server.client.post("/api/v1/login", json={"username": username, "password": "nope"})
    assert reply.status_code == 401
    assert reply.json() == {"detail": auth.WRONG_LOGIN}


def test_expired_session_and_missing_credentials_are_401(server: Harness) -> None:
    headers = server.admin
    server.clock.advance(days=31)
    reply = server.client.get("/api/v1/agents", headers=headers)
    assert (reply.status_code, reply.json()["detail"]) == (401, auth.BAD_SESSION)
    assert server.client.get("/api/v1/agents").status_code == 401


def test_logout_ends_the_session(server: Harness) -> None:
    headers = server.admin
    assert server.client.post("/api/v1/logout", headers=headers).status_code == 204
    assert server.client.get("/api/v1/agents", headers=headers).status_code == 401


def test_viewer_may_read_but_not_change(server: Harness) -> None:
    with server.state.db.session() as session:
        users.add(
            session,
            User(
                org_id=server.state.org_id,
                username="val",
                password_hash=hash_password("viewer-pass"),
                role="viewer",
                created_at=server.clock(),
            ),
        )
    token = server.client.post(
        "/api/v1/login", json={"username": "val", "password": "viewer-pass"}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert server.client.get("/api/v1/policies", headers=headers).status_code == 200
    reply = server.client.post("/api/v1/tokens", json={}, headers=headers)
    assert reply.status_code == 403
    assert reply.json()["detail"] == "this needs the admin role; user val is viewer"


def test_token_create_list_revoke(server: Harness) -> None:
    reply = server.client.post(
        "/api/v1/tokens",
        json={"expires_in": 3600, "uses": 3, "note": "rack 4"},
        headers=server.admin,
    )
    assert reply.status_code == 201
    created = reply.json()
    assert (created["uses_left"], created["expires_at"]) == (3, "2026-03-02T13:00:00Z")
    listed = server.client.get("/api/v1/tokens", headers=server.admin).json()
    assert [(t["id"], t["note"], t["revoked"]) for t in listed] == [
        (created["id"], "rack 4", False)
    ]
    assert "token" not in listed[0]  # shown once, at creation
    deleted = server.client.delete(f"/api/v1/tokens/{created['id']}", headers=server.admin)
    assert deleted.status_code == 204
    assert server.client.get("/api/v1/tokens", headers=server.admin).json()[0]["revoked"] is True
    missing = server.client.delete("/api/v1/tokens/nope", headers=server.admin)
    assert missing.status_code == 404


def test_enroll_uses_are_counted(server: Harness) -> None:
    token = server.new_token(uses=2)
    for name in ("fs1", "fs2"):
        reply = server.client.post("/api/v1/agent/enroll", json=enroll_body(token, name))
        assert reply.status_code == 200
        assert reply.json()["organisation"] == "default"
    reply = server.client.post("/api/v1/agent/enroll", json=enroll_body(token, "fs3"))
    assert (reply.status_code, reply.json()["detail"]) == (403, auth.TOKEN_USED_UP)


def test_enroll_with_expired_revoked_or_unknown_token(server: Harness) -> None:
    expiring = server.new_token(expires_in=60)
    revoked = server.client.post("/api/v1/tokens", json={}, headers=server.admin).json()
    server.client.delete(f"/api/v1/tokens/{revoked['id']}", headers=server.admin)
    server.clock.advance(seconds=61)
    cases = [
        (expiring, 403, auth.TOKEN_EXPIRED),
        (revoked["token"], 403, auth.TOKEN_REVOKED),
        ("not-a-real-token", 401, auth.TOKEN_UNKNOWN),
    ]
    for token, status, detail in cases:
        reply = server.client.post("/api/v1/agent/enroll", json=enroll_body(token))
        assert (reply.status_code, reply.json()["detail"]) == (status, detail)


def test_reenrolling_a_name_keeps_the_agent_and_replaces_its_secret(server: Harness) -> None:
    old_headers = server.enroll("fs1")
    old_id = server.agents["fs1"][0]
    server.enroll("fs1")
    assert server.agents["fs1"][0] == old_id
    reply = server.client.get("/api/v1/agent/repository", headers=old_headers)
    assert (reply.status_code, reply.json()["detail"]) == (401, auth.BAD_AGENT)


def test_agent_credentials_are_refused_on_admin_routes(server: Harness) -> None:
    headers = server.enroll("fs1")
    for path in ("/api/v1/agents", "/api/v1/jobs", "/api/v1/organisation/recovery-key"):
        reply = server.client.get(path, headers=headers)
        assert reply.status_code == 401
        assert "agent credentials cannot be used on admin routes" in reply.json()["detail"]


def test_admin_token_is_refused_on_agent_routes(server: Harness) -> None:
    for method, path in (
        ("GET", "/api/v1/agent/repository"),
        ("GET", "/api/v1/agent/storage?prefix=keys/"),
        ("POST", "/api/v1/agent/poll"),
    ):
        body = {"boot_id": "b", "hostname": "h", "os": "o", "version": "v"}
        reply = server.client.request(method, path, headers=server.admin, json=body)
        assert (reply.status_code, reply.json()["detail"]) == (401, auth.NOT_AN_AGENT)


def test_repository_key_opens_the_organisation_repository(server: Harness) -> None:
    from roost.engine.crypto import MasterKey

    reply = server.client.get("/api/v1/agent/repository", headers=server.enroll("fs1"))
    repo = server.state.repos.repository(server.state.org_id)
    assert MasterKey.from_json(reply.json()["master_key"]) == repo.key.master
    assert reply.json()["config"]["id"] == repo.config.id


def test_recovery_key_opens_the_repository(server: Harness) -> None:
    from roost.engine.repository import Repository

    reply = server.client.get("/api/v1/organisation/recovery-key", headers=server.admin)
    key = reply.json()["recovery_key"]
    backend = server.state.repos.backend(server.state.org_id)
    opened = Repository.open(backend, key)
    assert opened.config.id == server.state.repos.repository(server.state.org_id).config.id


def test_session_lifetime_follows_settings(server: Harness) -> None:
    assert ServerSettings().session_hours == 12


def test_the_repositories_are_opened_in_the_background_at_start(server: Harness) -> None:
    repos = server.state.repos
    if repos.opening is not None:  # the start's own opening must not refill the cache
        repos.opening.join(30)
    repos._opened.clear()  # as after a restart
    repos.open_all_in_background().join(30)
    assert list(repos._opened) == [server.state.org_id]
    assert repos.repository(server.state.org_id) is repos._opened[server.state.org_id]


def test_a_repository_that_cannot_be_opened_at_start_waits_for_a_job(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roost.errors import StorageError

    repos = server.state.repos
    if repos.opening is not None:  # the start's own opening must not refill the cache
        repos.opening.join(30)
    repos._opened.clear()

    def down(org_id: str) -> None:
        raise StorageError("storage unreachable")

    monkeypatch.setattr(repos, "_passphrase", down)
    repos.open_all_in_background().join(30)
    assert repos._opened == {}
