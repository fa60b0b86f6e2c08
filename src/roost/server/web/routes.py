"""The dashboard: server-rendered pages over the same catalog and sessions as the API.

The session token lives in an HttpOnly, SameSite=Strict cookie, which is also what keeps
other sites from submitting the dashboard's forms (no separate CSRF token needed).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Cookie, Form, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from roost.errors import RoostError
from roost.server import auth
from roost.server import sets as set_service
from roost.server.api import lookup
from roost.server.api.deps import (
    CurrentUser,
    NowDep,
    ReadSessionDep,
    SessionDep,
    StateDep,
    user_from_token,
)
from roost.server.api.schemas import AgentPublic, JobPublic, SetPublic
from roost.server.api.views import agent_public, job_detail, jobs_public, set_public
from roost.server.catalog.queries import agents, sets, users
from roost.server.catalog.queries import jobs as job_queries
from roost.server.errors import ApiError, NotAuthenticated, NotFound, PermissionDenied
from roost.server.scheduler.planning import agent_view
from roost.server.security import hash_token
from roost.server.state import ServerState
from roost.server.web.format import FILTERS

HERE = Path(__file__).parent
STATIC = HERE / "static"
COOKIE = "roost_session"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(FILTERS)
router = APIRouter(include_in_schema=False)
CookieDep = Annotated[str | None, Cookie(alias=COOKIE)]
JOBS_SHOWN = 30  # the overview lists the newest jobs


def _user(state: StateDep, token: str | None) -> CurrentUser | None:
    if not token:
        return None
    try:
        return user_from_token(state, token)
    except NotAuthenticated:
        return None


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/")
def login_page(request: Request, state: StateDep, token: CookieDep = None) -> Response:
    if _user(state, token) is not None:
        return RedirectResponse("/ui", status_code=status.HTTP_303_SEE_OTHER)
    return _page(request, "login.html")


@router.post("/")
def login_form(
    request: Request,
    username: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    session: SessionDep,
    state: StateDep,
    now: NowDep,
) -> Response:
    try:
        result = auth.login(session, username, password, now, state.settings.session_hours)
    except NotAuthenticated as exc:
        return _page(request, "login.html", 401, error=str(exc), username=username)
    response = RedirectResponse("/ui", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        result.token,
        max_age=int(state.settings.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=not state.settings.insecure_http,
    )
    return response


@router.post("/logout")
def logout(session: SessionDep, token: CookieDep = None) -> Response:
    if token:
        users.delete_session(session, hash_token(token))
    response = _to_login()
    response.delete_cookie(COOKIE)
    return response


def _agents(
    session: Session, state: ServerState, user: CurrentUser, now: datetime
) -> list[AgentPublic]:
    offline_after = state.settings.offline_after_seconds
    rows = agents.list_for_org(session, user.org_id)
    return [agent_public(a, now, offline_after) for a in rows]


def _sets(session: Session, user: CurrentUser, now: datetime) -> list[SetPublic]:
    return [set_public(session, s, now) for s in sets.list_for_org(session, user.org_id)]


def _jobs(session: Session, user: CurrentUser) -> list[JobPublic]:
    return jobs_public(session, job_queries.list_jobs(session, user.org_id, limit=JOBS_SHOWN))


@router.get("/ui")
def overview(
    request: Request, session: ReadSessionDep, state: StateDep, now: NowDep, token: CookieDep = None
) -> Response:
    user = _user(state, token)
    if user is None:
        return _to_login()
    return _page(
        request,
        "overview.html",
        user=user,
        agents=_agents(session, state, user, now),
        sets=_sets(session, user, now),
        jobs=_jobs(session, user),
        flash=request.query_params.get("flash"),
        flash_level="error" if request.query_params.get("level") == "error" else "info",
    )


# The overview's sections, re-fetched by static/app.js every 2 s (401 once the session ends).


@router.get("/ui/fragments/agents")
def agents_fragment(
    request: Request, session: ReadSessionDep, state: StateDep, now: NowDep, token: CookieDep = None
) -> Response:
    user = _user(state, token)
    if user is None:
        return Response(status_code=status.HTTP_401_UNAUTHORIZED)
    return _page(request, "fragments/agents.html", agents=_agents(session, state, user, now))


@router.get("/ui/fragments/sets")
def sets_fragment(
    request: Request, session: ReadSessionDep, state: StateDep, now: NowDep, token: CookieDep = None
) -> Response:
    user = _user(state, token)
    if user is None:
        return Response(status_code=status.HTTP_401_UNAUTHORIZED)
    return _page(request, "fragments/sets.html", user=user, sets=_sets(session, user, now))


@router.get("/ui/fragments/jobs")
def jobs_fragment(
    request: Request, session: ReadSessionDep, state: StateDep, token: CookieDep = None
) -> Response:
    user = _user(state, token)
    if user is None:
        return Response(status_code=status.HTTP_401_UNAUTHORIZED)
    return _page(request, "fragments/jobs.html", jobs=_jobs(session, user))


@router.get("/ui/fragments/jobs/{job_id}")
def job_fragment(
    job_id: str, request: Request, session: ReadSessionDep, state: StateDep, token: CookieDep = None
) -> Response:
    user = _user(state, token)
    if user is None:
        return Response(status_code=status.HTTP_401_UNAUTHORIZED)
    job = lookup.job(session, user.org_id, job_id)
    missed = job_queries.missed(session, job.id)
    return _page(request, "fragments/job.html", job=job_detail(session, job), missed=missed)


@router.get("/ui/jobs/{job_id}")
def job_page(
    job_id: str, request: Request, session: ReadSessionDep, state: StateDep, token: CookieDep = None
) -> Response:
    user = _user(state, token)
    if user is None:
        return _to_login()
    try:
        job = lookup.job(session, user.org_id, job_id)
    except NotFound:
        return _page(request, "missing.html", 404, user=user, what=f"There is no job {job_id}.")
    missed = job_queries.missed(session, job.id)
    return _page(request, "job.html", user=user, job=job_detail(session, job), missed=missed)


@router.post("/ui/sets/{name}/backup")
def backup_now(
    name: str,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    state: StateDep,
    now: NowDep,
    token: CookieDep = None,
) -> Response:
    """Backup now. A form post is redirected to the overview with a flash message; app.js
    posts with ``Accept: application/json`` and gets the message as JSON (no page load)."""
    wants_json = "application/json" in request.headers.get("accept", "")
    user = _user(state, token)
    if user is None:
        if wants_json:
            return Response(status_code=status.HTTP_401_UNAUTHORIZED)
        return _to_login()
    level, status_code = "info", status.HTTP_200_OK
    try:
        if auth.ROLES.index(user.role) < auth.ROLES.index("operator"):
            raise PermissionDenied(f"user {user.username} may not start backups")
        backup_set = lookup.backup_set(session, user.org_id, name)
        agent = lookup.agent_by_id(session, backup_set.agent_id)
        view = agent_view(agent, now, timedelta(seconds=state.settings.offline_after_seconds))
        queued = set_service.request_backup(session, backup_set, view, user.username, now)
        background.add_task(state.wakeups.notify, agent.id)  # runs after the commit
        if queued.created:
            flash = f"backup of {name} queued"
            status_code = status.HTTP_201_CREATED
        else:
            flash = f"a backup of {name} is already queued (job {queued.job.id[:8]})"
        if queued.job.reason:
            flash += f": {queued.job.reason}"
    except RoostError as exc:
        flash, level = str(exc), "error"
        status_code = exc.status_code if isinstance(exc, ApiError) else status.HTTP_409_CONFLICT
    if wants_json:
        return JSONResponse({"message": flash, "level": level}, status_code=status_code)
    query = {"flash": flash} if level == "info" else {"flash": flash, "level": level}
    return RedirectResponse("/ui?" + urlencode(query), status_code=status.HTTP_303_SEE_OTHER)
