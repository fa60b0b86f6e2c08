"""The dashboard: cookie login, fleet overview with badges, live jobs fragment, job page."""

from __future__ import annotations

from tests.helpers.server import ADMIN_PASSWORD, Harness

from roost.server.web.routes import COOKIE


def login(server: Harness) -> None:
    reply = server.client.post(
        "/", data={"username": "admin", "password": ADMIN_PASSWORD}, follow_redirects=False
    )
    assert (reply.status_code, reply.headers["location"]) == (303, "/ui")
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_login_page_and_wrong_password(server: Harness) -> None:
    page = server.client.get("/")
    assert page.status_code == 200 and 'name="password"' in page.text
    reply = server.client.post("/", data={"username": "admin", "password": "wrong"})
    assert reply.status_code == 401
    assert "wrong username or password" in reply.text
    assert server.client.get("/ui", follow_redirects=False).headers["location"] == "/"


def test_overview_shows_agents_sets_and_live_jobs(server: Harness) -> None:
    server.enroll("fs1")
    server.enroll("fs2", online=False)
    server.backup_set("docs", "fs1", ["/srv/docs"])
    job_id = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()["id"]
    server.poll("fs1")
    server.event("fs1", job_id, state="running", estimate={"files": 4, "bytes": 4000})
    server.event("fs1", job_id, progress={"files_done": 1, "bytes_done": 1000, "rate": 500})
    login(server)
    page = server.client.get("/ui").text
    assert '<span class="badge badge-online">online</span>' in page
    assert '<span class="badge badge-offline">offline</span>' in page
    assert "/srv/docs" in page and 'action="/ui/sets/docs/backup"' in page
    assert 'data-refresh="/ui/fragments/jobs"' in page
    fragment = server.client.get("/ui/fragments/jobs").text
    assert f'href="/ui/jobs/{job_id}"' in fragment
    assert 'style="width: 25%"' in fragment and "1000 B of 3.9 KiB" in fragment


def test_fragment_without_a_session_is_401(server: Harness) -> None:
    assert server.client.get("/ui/fragments/jobs").status_code == 401


def test_job_page_shows_log_and_missed_files(server: Harness) -> None:
    server.enroll("fs1")
    server.backup_set("docs", "fs1", ["/srv/docs"])
    job_id = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()["id"]
    server.poll("fs1")
    server.event(
        "fs1",
        job_id,
        state="succeeded_with_errors",
        log=[{"at": "2026-03-02T12:00:01+00:00", "level": "warning", "message": "VSS <off>"}],
        missed=[{"path": "/srv/docs/a.pst", "reason": "locked by another process"}],
    )
    login(server)
    page = server.client.get(f"/ui/jobs/{job_id}").text
    assert "VSS &lt;off&gt;" in page  # escaped
    assert "/srv/docs/a.pst" in page and "locked by another process" in page
    assert "Missed files (1)" in page


def test_backup_now_button(server: Harness) -> None:
    server.enroll("fs1")
    server.backup_set("docs", "fs1", ["/srv/docs"])
    login(server)
    reply = server.client.post("/ui/sets/docs/backup", follow_redirects=False)
    assert reply.headers["location"] == "/ui?flash=backup+of+docs+queued"
    assert len(server.poll("fs1")) == 1


def test_logout_clears_the_session(server: Harness) -> None:
    login(server)
    server.client.post("/logout")
    assert server.client.cookies.get(COOKIE) is None
    assert server.client.get("/ui", follow_redirects=False).status_code == 303


def test_static_assets_are_served(server: Harness) -> None:
    js = server.client.get("/static/app.js")
    assert js.status_code == 200 and "data-refresh" in js.text
    assert server.client.get("/static/app.css").status_code == 200
