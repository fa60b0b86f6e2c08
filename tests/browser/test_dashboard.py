"""The dashboard in a real browser (Chromium driven by Playwright) against a real `roost server`
and a real `roost agent run`, both subprocesses (tests/helpers/processes.py).

What a person sees: the login form refuses a wrong password and accepts the right one; the
fleet overview shows the agent online and its backup sets; "Back up now" queues a job that
appears in the jobs list and ends `succeeded` while the page stays loaded (static/app.js
re-fetches the fragments); the job page shows the level, the log and "no missed files"; a
bandwidth-limited job shows live progress (bytes of the total, rate, ETA); logging out ends
the session. Screenshots land in tests/browser/artifacts/ (git-ignored) for a human to look at.

Needs the `playwright` Python package (the `dev` extra) and a Chromium binary: Debian's
`chromium` package at /usr/bin/chromium (`apt-get install -y chromium`), or the path in
ROOST_TEST_CHROMIUM. Playwright's own browser download (`playwright install`) is not used.
Without either, every test here is skipped with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.api_client import AdminClient
from tests.helpers.processes import AgentProcess, ServerProcess, start_agent, start_server
from tests.helpers.require import required


def _unavailable(reason: str) -> None:
    """Skip the module, or fail it where the run requires a browser (CI)."""
    if required("chromium"):
        pytest.fail(f"chromium is required in this run (ROOST_TEST_REQUIRE) but {reason}")
    pytest.skip(reason, allow_module_level=True)


try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    _unavailable("the playwright package is not installed: pip install -e '.[dev]'")

CHROMIUM = Path(os.environ.get("ROOST_TEST_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():  # pragma: no cover - depends on the environment
    _unavailable(
        f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set ROOST_TEST_CHROMIUM)"
    )

ARTIFACTS = Path(__file__).parent / "artifacts"
PASSWORD = "browser-test-password"
AGENT = "fileserver-01"
MIB = 2**20
WIDE, NARROW = 1280, 800
JOB_TIMEOUT_MS = 45_000
THROTTLE = 32 * MIB  # bytes/s: the bandwidth limit of the policy `throttled`
SERVER_ENV = {
    "ROOST_ADMIN_PASSWORD": PASSWORD,
    "ROOST_KDF_PROFILE": "test",
    "ROOST_POLL_WAIT_SECONDS": "2",
}
# A long, deep path: the sets table must wrap it inside its cell, not overflow the page.
DEEP = "departments/finance/annual-reports-and-statements/2025-fiscal-year-closing-documents"


# -- processes and data (one server and one agent for the module) ---------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[ServerProcess]:
    process = start_server(workdir / "server", SERVER_ENV)  # HTTPS, self-signed certificate
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[AdminClient]:
    client = AdminClient.login(server.url, PASSWORD, fingerprint=server.fingerprint)
    try:
        yield client
    finally:
        client.close()  # before the server stops: an open TLS connection delays its exit


@pytest.fixture(scope="module")
def agent(server: ServerProcess, admin: AdminClient, workdir: Path) -> Iterator[AgentProcess]:
    token = admin.create_token(note="browser test agent")
    process = start_agent(workdir / AGENT, server, token, env={"ROOST_KDF_PROFILE": "test"})
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def documents(admin: AdminClient, agent: AgentProcess, workdir: Path) -> Path:
    """The backup set `documents`: two small files under a long path, policy `nightly`."""
    source = workdir / "data" / DEEP
    source.mkdir(parents=True)
    (source / "balance-sheet.csv").write_text("account,amount\ncash,100\n")
    (source / "notes.txt").write_text("closing notes\n")
    admin.create_policy("nightly", "daily 02:00")
    admin.create_set("documents", agent.name, [str(source)], policy="nightly")
    return source


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[Browser]:
    """Chromium for the module; it depends on ``server`` so it closes (and drops its
    keep-alive connections) before the server is stopped."""
    ARTIFACTS.mkdir(exist_ok=True)
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(
        base_url=server.url,
        ignore_https_errors=True,  # the server's self-signed certificate
        viewport={"width": WIDE, "height": 900},
    )
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page) -> None:
    page.goto("/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui$"))


def shoot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths} at {page.url}"


def set_row(page: Page, name: str) -> Locator:
    return page.locator(f'#sets tr[data-set="{name}"]')


def newest_job_row(page: Page, set_name: str) -> Locator:
    """The newest job of the set in the overview's jobs list (newest first)."""
    return page.locator("#jobs tr[data-job]").filter(has=page.get_by_text(set_name, exact=True))


def keep_marker(page: Page) -> None:
    """Mark the loaded document; ``assert_not_reloaded`` fails once it was replaced."""
    page.evaluate("() => { window.roostTestMarker = 'still here'; }")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("() => window.roostTestMarker") == "still here", "the page reloaded"


# -- tests -----------------------------------------------------------------------------------


def test_wrong_password_is_refused_and_the_right_one_logs_in(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_title("Roost — log in")
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in to Roost")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    expect(page.get_by_label("Username")).to_have_value("admin")
    expect(page.get_by_label("Password")).to_be_focused()  # the field to retype
    shoot(page, "login-error")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui$"))
    expect(page).to_have_title("Roost — fleet")
    expect(page.locator("header .who")).to_have_text("admin admin")
    expect(page.get_by_role("alert")).to_have_count(0)


def test_overview_shows_the_agent_online_and_the_backup_set(
    page: Page, admin: AdminClient, agent: AgentProcess, documents: Path, workdir: Path
) -> None:
    archive = workdir / "archive"
    archive.mkdir()
    admin.create_set("archive", agent.name, [str(archive)])  # no policy: manual only
    admin.call("POST", "/sets/archive/disable")
    log_in(page)
    agent_row = page.locator("#agents tbody tr").filter(has_text=agent.name)
    expect(agent_row.locator("td").nth(0)).to_have_text(agent.name)
    expect(agent_row.locator(".badge")).to_have_text("online")
    expect(agent_row.locator(".badge")).to_have_class("badge badge-online")

    row = set_row(page, "documents")
    cells = row.locator("td")
    expect(cells.nth(0)).to_have_text("documents")
    expect(cells.nth(1)).to_have_text(agent.name)
    expect(cells.nth(2)).to_have_text(str(documents))
    expect(cells.nth(3)).to_have_text("nightly")
    expect(cells.nth(5)).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d 02:00:00 UTC$"))
    expect(row.get_by_role("button", name="Back up now")).to_be_enabled()

    disabled = set_row(page, "archive").locator("td")
    expect(disabled.nth(0)).to_have_text("archive disabled")
    expect(disabled.nth(3)).to_have_text("manual")
    expect(disabled.nth(4)).to_have_text("never")
    expect(disabled.nth(5)).to_have_text("disabled")
    expect(set_row(page, "archive").get_by_role("button", name="Back up now")).to_be_disabled()
    shoot(page, f"overview-{WIDE}")

    page.set_viewport_size({"width": NARROW, "height": 900})
    expect(cells.nth(2)).to_have_text(str(documents))
    assert_no_horizontal_overflow(page)
    shoot(page, f"overview-{NARROW}")


def test_back_up_now_runs_live_and_the_job_page_tells_the_story(
    page: Page, admin: AdminClient, documents: Path
) -> None:
    log_in(page)
    keep_marker(page)
    before = {job["id"] for job in admin.jobs(set="documents")}
    set_row(page, "documents").get_by_role("button", name="Back up now").click()

    expect(page.locator("#flash")).to_have_text("backup of documents queued")
    job_row = newest_job_row(page, "documents").first
    expect(job_row).to_be_visible()  # in the list at once, whatever its state
    job_id = job_row.get_attribute("data-job")
    assert job_id is not None and job_id not in before

    # The live refresh takes it to its end without a page load.
    expect(job_row.locator(".badge")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    expect(job_row.locator("td").nth(3)).to_have_text("backup (full)")
    expect(job_row.locator(".progress")).to_have_text(
        re.compile(r"^2 files · 38 B · (< 1s|\d+s)$")  # 24 + 14 bytes
    )
    last_job = set_row(page, "documents").locator("td").nth(4)
    expect(last_job).to_have_text("succeeded")  # the sets table is live too
    assert_not_reloaded(page)
    expect(page).to_have_url(re.compile(r"/ui$"))
    shoot(page, "overview-after-backup")
    assert admin.job(job_id)["state"] == "succeeded"

    job_row.get_by_role("link", name=job_id[:8]).click()
    expect(page).to_have_url(re.compile(rf"/ui/jobs/{job_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Backup of documents on {AGENT}")
    expect(page.locator(".title-row .badge")).to_have_text("succeeded")
    expect(page.locator("dd.level")).to_have_text("full — first backup of this backup set")
    messages = [line["message"] for line in admin.job(job_id)["log"]]
    assert any(re.fullmatch(r"snapshot [0-9a-f]{8} saved", m) for m in messages), messages
    expect(page.locator("ol.log li .log-message")).to_have_text(messages)  # all, in order
    expect(page.get_by_role("heading", name="Missed files (0)")).to_be_visible()
    expect(page.locator("section", has_text="Missed files").locator("p.empty")).to_have_text(
        "No missed files: every file was read."
    )
    shoot(page, f"job-{WIDE}")
    page.set_viewport_size({"width": NARROW, "height": 900})
    assert_no_horizontal_overflow(page)
    shoot(page, f"job-{NARROW}")


def test_a_throttled_job_shows_live_progress(
    page: Page, admin: AdminClient, agent: AgentProcess, workdir: Path
) -> None:
    """A backup limited to 32 MiB/s (about 6 s on 2 CPUs, longer with more), watched at once
    on the overview at 1280 and 800 px and on its job page (each refreshes every 2 s).

    The agent's progress counts bytes *read*, and it reads up to a 16 MiB pack per upload
    worker (one per CPU) plus the open pack ahead of the throttled upload: the first report
    is already that much, and the last part of the upload shows 100 % ("finishing…"). The
    data is that read-ahead plus 4 s of upload, so the bar is partly filled, with a rate and
    an ETA, for about 4 s: longer than a refresh period on both pages."""
    read_ahead = (max(2, os.cpu_count() or 2) + 2) * 16 * MIB
    total = read_ahead + 4 * THROTTLE
    source = workdir / "media"
    source.mkdir()
    for index in range(total // (16 * MIB)):
        (source / f"clip-{index:02d}.bin").write_bytes(os.urandom(16 * MIB))
    admin.create_policy("throttled", "daily 03:00", bandwidth_limit=THROTTLE)
    admin.create_set("media", agent.name, [str(source)], policy="throttled")

    log_in(page)
    keep_marker(page)
    set_row(page, "media").get_by_role("button", name="Back up now").click()
    job_row = newest_job_row(page, "media").first
    expect(job_row).to_be_visible()
    job_id = job_row.get_attribute("data-job")
    # The same session in two more tabs at 800 px: the job page and the overview.
    job_page = page.context.new_page()
    job_page.set_viewport_size({"width": NARROW, "height": 900})
    job_page.goto(f"/ui/jobs/{job_id}")
    narrow = page.context.new_page()
    narrow.set_viewport_size({"width": NARROW, "height": 900})
    narrow.goto("/ui")

    # Mid-job: a partly filled bar, bytes done of the total, a rate and the time left.
    speed = re.compile(r"^[1-9][0-9.]* (B|KiB|MiB|GiB)/s · ETA (< 1s|\d+s|\d+m \d\ds)$")
    of_total = re.compile(rf"^\d{{1,2}}% · [0-9.]+ (B|KiB|MiB) of {total / MIB:.1f} MiB$")
    views = [
        (page, job_row, f"progress-mid-job-{WIDE}"),
        (narrow, newest_job_row(narrow, "media").first, f"progress-mid-job-{NARROW}"),
        (job_page, job_page.locator(".job-progress"), f"job-running-{NARROW}"),
    ]
    for view, where, name in views:
        expect(where.locator(".progress-speed")).to_have_text(speed, timeout=JOB_TIMEOUT_MS)
        expect(where.locator(".progress-bytes")).to_have_text(of_total)
        shown = int((where.locator(".progress-bytes").text_content() or "").split("%")[0])
        bar = where.locator('[role="progressbar"]')
        assert int(bar.get_attribute("aria-valuenow") or "-1") == shown
        assert 0 < shown < 100
        expect(view.locator(".badge-running").first).to_have_text("running")
        assert_no_horizontal_overflow(view)
        shoot(view, name)

    expect(job_row.locator(".badge")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    files = total // (16 * MIB)
    expect(job_row.locator(".progress")).to_have_text(
        re.compile(rf"^{files} files · {total / MIB:.1f} MiB · \d+s$")
    )
    assert_not_reloaded(page)
    shoot(page, "progress-finished")
    expect(job_page.locator(".title-row .badge")).to_have_text("succeeded")
    expect(job_page.locator(".job-progress")).to_have_count(0)
    shoot(job_page, f"job-finished-{NARROW}")


def test_log_out_ends_the_session(page: Page) -> None:
    log_in(page)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in to Roost")
    page.goto("/ui")  # the session is gone: back to the login form
    expect(page).to_have_url(re.compile(r"/$"))
    assert page.context.cookies() == []
