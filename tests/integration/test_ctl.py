"""`roost ctl` against a real `roost server` process (HTTPS, pinned certificate) and a real
`roost agent`: every command through a subprocess, `--json` with exact fields, exit codes and
error lines."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.cli import ROOST, run_on_terminal, tree_digest, write_files
from tests.helpers.processes import (
    AgentProcess,
    Ctl,
    ServerProcess,
    ctl_runner,
    enroll_agent,
    free_port,
    start_agent,
    start_server,
)

pytestmark = pytest.mark.skipif(ROOST is None, reason="the roost console script is not installed")

ID = re.compile(r"[0-9a-f]{32}")
WRONG_FINGERPRINT = ":".join(["00"] * 32)
AGENT = "fs1"
LEAP_DAY = "0 0 29 2 *"  # midnight on 29 February
FILES = {"a.txt": b"hello roost\n", "sub/b.bin": os.urandom(300_000), "sub/empty": b""}


# -- fixtures: one server, one running agent, one backup set for this file (stopped after it) -


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("ctl-server") / "home") as started:
        yield started


@pytest.fixture(scope="module")
def admin(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Ctl:
    """A ctl that logs in on its first command and keeps the token in its own config."""
    return ctl_runner(server, tmp_path_factory.mktemp("admin") / "ctl.json")


@pytest.fixture
def ctl(server: ServerProcess, tmp_path: Path) -> Ctl:
    """A ctl with a fresh (absent) config file."""
    return ctl_runner(server, tmp_path / "config" / "ctl.json")


@pytest.fixture(scope="module")
def agent(
    server: ServerProcess, admin: Ctl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    token = admin.json("tokens", "create", "--note", "ctl tests")["token"]
    with start_agent(tmp_path_factory.mktemp("agents") / AGENT, server, token) as started:
        yield started


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("source") / "data"
    write_files(root, FILES)
    return root


@pytest.fixture(scope="module")
def policy(admin: Ctl) -> str:
    """A policy whose schedule never fires during the tests: no scheduled job interferes."""
    admin.json("policies", "create", "leap-day", "--schedule", LEAP_DAY)
    return "leap-day"


@pytest.fixture(scope="module")
def backup_set(admin: Ctl, agent: AgentProcess, policy: str, source: Path) -> str:
    args = ["--agent", agent.name, "--path", str(source), "--policy", policy]
    admin.json("sets", "create", "docs", *args)
    return "docs"


def fails(ctl: Ctl, *args: str, code: int, unset: tuple[str, ...] = ()) -> str:
    """Run a command that must fail with ``code``; return its one error line."""
    result = ctl(*args, unset=unset)
    assert result.code == code, f"exit {result.code}, stdout {result.stdout!r}: {result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert len(result.stderr_lines) == 1, result.stderr
    return result.stderr_lines[0]


def read_config(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


# -- server, trust, login -------------------------------------------------------------------


def test_login_saves_server_fingerprint_and_token_in_a_private_file(
    ctl: Ctl, server: ServerProcess
) -> None:
    config = Path(ctl.env["ROOST_CTL_CONFIG"])
    answer = ctl.json("login")
    assert answer == {
        "server": server.url,
        "user": "admin",
        "fingerprint": server.fingerprint,
        "expires_at": answer["expires_at"],
        "config": str(config),
    }
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = read_config(config)
    entry = saved["servers"][server.url]
    assert saved["current"] == server.url
    assert entry["fingerprint"] == server.fingerprint
    assert entry["user"] == "admin"
    assert entry["expires_at"] == answer["expires_at"]
    assert len(entry["token"]) >= 32

    # Later commands need neither the server, nor the fingerprint, nor the password.
    unset = ("ROOST_SERVER", "ROOST_FINGERPRINT", "ROOST_ADMIN_PASSWORD")
    assert isinstance(ctl.json("agents", unset=unset), list)
    assert read_config(config)["servers"][server.url]["token"] == entry["token"]


def test_login_with_a_wrong_password_is_refused(ctl: Ctl) -> None:
    result = ctl("login", env={"ROOST_ADMIN_PASSWORD": "not the password"})
    assert (result.code, result.stderr) == (5, "roost: error: wrong username or password\n")
    assert not Path(ctl.env["ROOST_CTL_CONFIG"]).exists()


def test_login_prompts_for_the_password_on_a_terminal(ctl: Ctl, server: ServerProcess) -> None:
    env = {k: v for k, v in ctl.env.items() if k != "ROOST_ADMIN_PASSWORD"}
    typed = server.admin_password.encode() + b"\n"
    prompt = f"Password for admin on {server.url}: ".encode()
    code, shown = run_on_terminal(["ctl", "login"], env, [(prompt, typed)])
    assert code == 0, shown
    assert f"logged in to {server.url} as admin".encode() in shown
    assert server.admin_password.encode() not in shown  # not echoed


def test_commands_log_in_transparently_and_cache_the_token(ctl: Ctl, server: ServerProcess) -> None:
    config = Path(ctl.env["ROOST_CTL_CONFIG"])
    ctl.json("agents")
    token = read_config(config)["servers"][server.url]["token"]
    ctl.json("policies", "list", unset=("ROOST_ADMIN_PASSWORD",))  # the cached token
    assert read_config(config)["servers"][server.url]["token"] == token


def test_a_refused_cached_token_logs_in_again_once(ctl: Ctl, server: ServerProcess) -> None:
    config = Path(ctl.env["ROOST_CTL_CONFIG"])
    ctl.json("login")
    saved = read_config(config)
    saved["servers"][server.url]["token"] = "expired-or-revoked"
    config.write_text(json.dumps(saved))

    line = fails(ctl, "agents", code=5, unset=("ROOST_ADMIN_PASSWORD",))
    assert line == (
        "roost: error: the server refused the saved session (session unknown or expired: log "
        "in again (POST /api/v1/login)): run `roost ctl login` again, or set "
        "ROOST_ADMIN_PASSWORD"
    )
    assert isinstance(ctl.json("agents"), list)  # the password is in the environment
    assert read_config(config)["servers"][server.url]["token"] != "expired-or-revoked"


def test_without_a_session_or_password_it_says_to_log_in(ctl: Ctl, server: ServerProcess) -> None:
    line = fails(ctl, "agents", code=5, unset=("ROOST_ADMIN_PASSWORD",))
    assert line == (
        f"roost: error: not logged in to {server.url}: run `roost ctl login` (or set "
        "ROOST_ADMIN_PASSWORD, and ROOST_USER for a user other than admin)"
    )


def test_a_wrong_fingerprint_is_refused_before_anything_is_sent(
    ctl: Ctl, server: ServerProcess
) -> None:
    result = ctl("agents", env={"ROOST_FINGERPRINT": WRONG_FINGERPRINT})
    assert result.code == 5
    assert result.stderr == (
        f"roost: error: the server's certificate fingerprint {server.fingerprint} does not "
        f"match the pinned {WRONG_FINGERPRINT}: {server.url} may not be your Roost server (or "
        "someone is intercepting the connection); if its certificate was replaced on purpose, "
        "pass the new one with --fingerprint\n"
    )
    assert not Path(ctl.env["ROOST_CTL_CONFIG"]).exists()  # no login happened


def test_no_pinned_fingerprint_is_refused_with_advice(ctl: Ctl, server: ServerProcess) -> None:
    line = fails(ctl, "agents", code=2, unset=("ROOST_FINGERPRINT",))
    assert line == (
        f"roost: error: no certificate fingerprint pinned for {server.url}: pass --fingerprint "
        "(or set ROOST_FINGERPRINT) with the SHA-256 fingerprint `roost server` printed at "
        "start; it is saved by `roost ctl login`"
    )
    # --fingerprint as an option works as well as the environment variable.
    pinned = ctl(
        "--fingerprint", server.fingerprint or "", "agents", "--json", unset=("ROOST_FINGERPRINT",)
    )
    assert pinned.code == 0, pinned.stderr


def test_no_server_given(ctl: Ctl, server: ServerProcess) -> None:
    unset = ("ROOST_SERVER", "ROOST_FINGERPRINT")
    line = fails(ctl, "agents", code=2, unset=unset)
    assert line == (
        "roost: error: no server given: pass --server https://HOST:PORT (or set ROOST_SERVER), "
        "or run `roost ctl --server URL --fingerprint FP login` once"
    )
    pinned = ["--server", server.url, "--fingerprint", server.fingerprint or ""]
    assert ctl.json("login", *pinned, unset=unset)["server"] == server.url


def test_an_unreachable_server_exits_7_with_the_url(ctl: Ctl, server: ServerProcess) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    line = fails(ctl, "--server", url, "agents", code=7)
    assert line == (
        f"roost: error: cannot reach the server at {url}: connection refused; "
        "is `roost server` running?"
    )


# -- tokens and agents ----------------------------------------------------------------------


def test_tokens_create_list_revoke(admin: Ctl) -> None:
    created = admin.json("tokens", "create", "--expires", "2h", "--uses", "3", "--note", "lab")
    assert set(created) == {"id", "token", "expires_at", "uses_left"}
    assert ID.fullmatch(created["id"]) and len(created["token"]) == 32
    assert created["uses_left"] == 3

    listed = {t["id"]: t for t in admin.json("tokens", "list")}
    assert listed[created["id"]] == {
        "id": created["id"],
        "expires_at": created["expires_at"],
        "uses_left": 3,
        "revoked": False,
        "created_at": listed[created["id"]]["created_at"],
        "note": "lab",
    }
    assert "token" not in listed[created["id"]]  # shown once, never listed

    assert admin.json("tokens", "revoke", created["id"]) == {"id": created["id"], "revoked": True}
    listed = {t["id"]: t for t in admin.json("tokens", "list")}
    assert listed[created["id"]]["revoked"] is True

    line = fails(admin, "tokens", "revoke", "nope", code=4)
    assert line == "roost: error: no enrollment token 'nope'; list them with GET /api/v1/tokens"


def test_an_agent_enrolled_with_a_created_token_is_listed(admin: Ctl, agent: AgentProcess) -> None:
    listed = {a["name"]: a for a in admin.json("agents")}
    assert set(listed[AGENT]) == {
        "id",
        "name",
        "hostname",
        "os",
        "version",
        "state",
        "last_seen",
        "boot_id",
    }
    assert listed[AGENT]["state"] == "online"
    assert AGENT in {a["name"] for a in admin.json("agents", "list")}


def test_agents_disable_and_enable(admin: Ctl, backup_set: str) -> None:
    disabled = admin.json("agents", "disable", AGENT)
    try:
        assert (disabled["name"], disabled["state"]) == (AGENT, "disabled")
        line = fails(admin, "backup-now", backup_set, code=6)
        assert line.startswith("roost: error: ") and "disabled" in line
    finally:
        enabled = admin.json("agents", "enable", AGENT)
    assert (enabled["name"], enabled["state"]) == (AGENT, "online")
    assert fails(admin, "agents", "disable", "nope", code=4) == (
        "roost: error: no agent named 'nope'; list them with GET /api/v1/agents"
    )


# -- policies and sets ----------------------------------------------------------------------


def test_policies_create_list_show(admin: Ctl) -> None:
    created = admin.json(
        "policies", "create", "full", "--schedule", "30 1 * * *", "--timezone", "Europe/Berlin",
        "--window", "22:00-06:00", "--bandwidth", "10M", "--retries", "2",
        "--retry-interval", "10m", "--keep-last", "3", "--keep-hourly", "24", "--keep-daily", "7",
        "--keep-weekly", "4", "--keep-monthly", "12", "--keep-yearly", "2",
    )  # fmt: skip
    assert created == {
        "id": created["id"],
        "name": "full",
        "schedule": "30 1 * * *",
        "timezone": "Europe/Berlin",
        "window": "22:00-06:00",
        "bandwidth_limit": 10 * 1024 * 1024,
        "retries": 2,
        "retry_interval": 600,
        "catch_up_seconds": 43200,
        "keep_last": 3,
        "keep_hourly": 24,
        "keep_daily": 7,
        "keep_weekly": 4,
        "keep_monthly": 12,
        "keep_yearly": 2,
        "next_run": created["next_run"],
    }
    assert created["next_run"] is not None
    assert admin.json("policies", "show", "full") == created
    assert "full" in {p["name"] for p in admin.json("policies", "list")}

    other = admin.json(
        "policies", "create", "late", "--schedule", "daily 23:00", "--window", "22:00+4h"
    )
    assert (other["window"], other["retries"], other["keep_daily"]) == ("22:00+4h", 0, 0)
    assert fails(admin, "policies", "create", "full", "--schedule", "daily 01:00", code=6) == (
        "roost: error: a policy named 'full' already exists; choose another name"
    )
    short = admin.json("policies", "create", "x", "--schedule", "daily 01:00", "--window", "4h")
    assert short["window"] == "4h"  # opens at the schedule's time: 01:00-05:00
    line = fails(
        admin,
        "policies",
        "create",
        "y",
        "--schedule",
        "daily 01:00,13:00",
        "--window",
        "4h",
        code=2,
    )
    assert line.startswith("roost: error: body: invalid backup window '4h': the schedule runs")
    assert fails(admin, "policies", "show", "nope", code=4) == (
        "roost: error: no policy named 'nope'; list them with GET /api/v1/policies"
    )


def test_sets_create_list_show_disable_enable(admin: Ctl, agent: AgentProcess, policy: str) -> None:
    created = admin.json(
        "sets", "create", "shares", "--agent", AGENT, "--path", "/srv/ctl/a", "--path",
        "/srv/ctl/b", "--exclude", "*.tmp", "--exclude", "cache/", "--policy", policy,
        "--snapshot-mode", "never",
    )  # fmt: skip
    assert created == {
        "id": created["id"],
        "name": "shares",
        "agent": AGENT,
        "paths": ["/srv/ctl/a", "/srv/ctl/b"],
        "excludes": ["*.tmp", "cache/"],
        "policy": policy,
        "snapshot_mode": "never",
        "enabled": True,
        "created_at": created["created_at"],
        "last_job": None,
        "next_run": created["next_run"],
    }
    assert admin.json("sets", "show", "shares") == created
    assert "shares" in {s["name"] for s in admin.json("sets", "list")}

    disabled = admin.json("sets", "disable", "shares")
    assert (disabled["name"], disabled["enabled"], disabled["next_run"]) == ("shares", False, None)
    assert admin.json("sets", "enable", "shares")["enabled"] is True

    overlap = ["sets", "create", "inner", "--agent", AGENT, "--path", "/srv/ctl/a/x"]
    line = fails(admin, *overlap, "--policy", policy, code=6)
    assert line == "roost: error: paths overlap backup set shares: /srv/ctl/a contains /srv/ctl/a/x"
    line = fails(
        admin,
        "sets",
        "create",
        "rel",
        "--agent",
        AGENT,
        "--path",
        "srv",
        "--policy",
        policy,
        code=2,
    )
    assert line.startswith("roost: error: body.paths.0: 'srv' is not an absolute path")


def test_an_unknown_set_exits_4_with_the_servers_message(admin: Ctl) -> None:
    expected = "roost: error: no backup set named 'nope'; list them with GET /api/v1/sets"
    for args in (("sets", "show", "nope"), ("backup-now", "nope")):
        assert fails(admin, *args, code=4) == expected


def test_sets_delete_needs_the_name_confirmed(admin: Ctl, agent: AgentProcess, policy: str) -> None:
    admin.json(
        "sets",
        "create",
        "scratch",
        "--agent",
        AGENT,
        "--path",
        "/srv/scratch",
        "--policy",
        policy,
    )
    refusal = (
        "roost: error: deleting backup set scratch also deletes its snapshots; "
        "repeat with --confirm scratch"
    )
    assert fails(admin, "sets", "delete", "scratch", code=2) == refusal
    assert fails(admin, "sets", "delete", "scratch", "--confirm", "other", code=2) == refusal
    assert admin.json("sets", "show", "scratch")["name"] == "scratch"  # still there

    deleted = admin.json("sets", "delete", "scratch", "--confirm", "scratch")
    assert deleted == {"name": "scratch", "deleted": True}
    fails(admin, "sets", "show", "scratch", code=4)


def test_sets_delete_prompts_on_a_terminal(admin: Ctl, agent: AgentProcess, policy: str) -> None:
    admin.json(
        "sets", "create", "typed", "--agent", AGENT, "--path", "/srv/typed", "--policy", policy
    )
    admin.json("agents")  # the token is cached in the config the terminal run uses
    script = [(b"Type the set's name to confirm", b"typed\n")]
    code, shown = run_on_terminal(["ctl", "sets", "delete", "typed"], admin.env, script)
    assert code == 0, shown
    assert b"deleted backup set typed" in shown
    fails(admin, "sets", "show", "typed", code=4)


# -- jobs, snapshots, restores --------------------------------------------------------------


def test_backup_now_wait_snapshots_ls_restore(
    admin: Ctl, backup_set: str, source: Path, tmp_path: Path
) -> None:
    queued = admin.json("backup-now", backup_set)
    assert ID.fullmatch(queued["id"])
    assert (queued["kind"], queued["trigger"], queued["set"], queued["agent"]) == (
        "backup", "now", backup_set, AGENT,
    )  # fmt: skip
    assert queued["state"] in ("queued", "dispatched", "running")

    done = admin.json("job", queued["id"], "--wait", "--timeout", "60")
    assert (done["id"], done["state"], done["level"]) == (queued["id"], "succeeded", "full")
    assert done["level_reason"] == "first backup of this backup set"
    assert done["summary"]["files_new"] == len(FILES)
    assert any("saved" in line["message"] for line in done["log"])
    assert admin.json("job", queued["id"]) == done
    assert admin.json("missed", queued["id"]) == []

    snaps = admin.json("snapshots", backup_set)
    assert len(snaps) == 1
    assert set(snaps[0]) == {"id", "short_id", "time", "paths", "summary"}
    assert (snaps[0]["id"], snaps[0]["paths"]) == (done["snapshot_id"], [str(source)])

    entries = admin.json("ls", backup_set, snaps[0]["short_id"], str(source))
    assert [(e["name"], e["path"], e["type"], e["size"]) for e in entries] == [
        ("a.txt", f"{source}/a.txt", "file", len(FILES["a.txt"])),
        ("sub", f"{source}/sub", "dir", 0),
    ]

    target = tmp_path / "restored"
    restore = admin.json(
        "restore", backup_set, "--snapshot", "latest", "--target", str(target),
        "--conflict", "overwrite",
    )  # fmt: skip
    assert (restore["kind"], restore["set"], restore["agent"]) == ("restore", backup_set, AGENT)
    finished = admin.json("job", restore["id"], "--wait", "--timeout", "60")
    assert (finished["id"], finished["state"]) == (restore["id"], "succeeded")
    restored = target / source.relative_to("/")
    for name, data in FILES.items():
        assert (restored / name).read_bytes() == data
    assert tree_digest(restored) == tree_digest(source)  # nothing more, nothing less

    listed = admin.json("jobs", "--set", backup_set, "--limit", "5")
    assert [j["id"] for j in listed][:2] == [restore["id"], queued["id"]]
    assert [j["id"] for j in admin.json("jobs", "--set", backup_set, "--limit", "1")] == [
        restore["id"]
    ]
    assert queued["id"] in {j["id"] for j in admin.json("jobs", "--state", "succeeded")}
    assert admin.json("sets", "show", backup_set)["last_job"]["id"] == restore["id"]

    line = fails(
        admin, "restore", backup_set, "--snapshot", "latest", "--before", "2001-01-01T00:00:00Z",
        "--target", str(target), "--conflict", "skip", code=4,
    )  # fmt: skip
    assert line == (
        "roost: error: the backup set has no snapshot before 2001-01-01T00:00:00+00:00; "
        "run a backup first"
    )


def test_a_job_of_an_offline_agent_waits_times_out_and_cancels(
    admin: Ctl, server: ServerProcess, policy: str, tmp_path: Path
) -> None:
    token = admin.json("tokens", "create")["token"]
    enroll_agent(tmp_path / "offline", server, token, "offline")  # never runs
    admin.json(
        "sets", "create", "parked", "--agent", "offline", "--path", "/srv/p", "--policy", policy
    )
    job = admin.json("backup-now", "parked")
    assert job["state"] == "queued"

    result = admin("job", job["id"], "--wait", "--timeout", "1")
    assert result.code == 1
    assert (
        result.stderr.splitlines()[-1] == f"roost: error: job {job['id']} is still queued after 1 s"
    )

    cancelled = admin.json("cancel", job["id"])
    assert (cancelled["id"], cancelled["state"]) == (job["id"], "cancelled")
    assert cancelled["reason"] == "cancelled by admin"
    waited = admin("job", job["id"], "--wait", "--json")
    assert waited.code == 1  # a final state other than succeeded
    assert waited.json()["state"] == "cancelled"
    assert fails(admin, "cancel", job["id"], code=6) == (
        f"roost: error: job {job['id']} already ended as cancelled; nothing to cancel"
    )
    assert fails(admin, "job", "nope", code=4) == (
        "roost: error: no job 'nope'; list jobs with GET /api/v1/jobs"
    )


def test_jobs_watch_refreshes_until_ctrl_c(admin: Ctl) -> None:
    once = admin("jobs", "--watch", "--json", "--limit", "2")  # with --json: printed once
    assert once.code == 0 and isinstance(once.json(), list)
    admin.json("agents")  # the token is cached in the config the terminal run uses
    script = [(b"STATE", b"\x03")]
    code, shown = run_on_terminal(["ctl", "jobs", "--watch"], admin.env, script, timeout=20)
    assert code == 0, shown
    assert b"Traceback" not in shown


def test_recovery_key(admin: Ctl) -> None:
    answer = admin.json("recovery-key")
    assert set(answer) == {"recovery_key"}
    assert re.fullmatch(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}", answer["recovery_key"])
    human = admin.ok("recovery-key").stdout
    assert answer["recovery_key"] in human


def test_usage_errors_exit_2(admin: Ctl) -> None:
    result = admin(
        "restore", "docs", "--snapshot", "latest", "--target", "/x", "--conflict", "merge"
    )
    assert result.code == 2 and "'merge' is not one of" in result.stderr


def test_plain_roost_commands_do_not_import_ctl() -> None:
    code = (
        "import sys; from roost.cli.main import run; run(['--version']); "
        "sys.exit(any(name.startswith(('roost.cli.ctl', 'httpx')) for name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
