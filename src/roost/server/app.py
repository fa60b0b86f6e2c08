"""``create_app(settings)``: the whole server as one FastAPI application, no globals.

Building it prepares the home directory, the catalog (migrations) and the first-start objects,
so tests get a ready server from one call; ``main.run_server`` adds TLS and uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from roost import __version__
from roost.server.api import (
    admin_agents,
    admin_jobs,
    admin_org,
    admin_policies,
    admin_restores,
    admin_sets,
    admin_snapshots,
    admin_tokens,
    agent,
    auth,
    errors,
    storage,
)
from roost.server.bootstrap import bootstrap
from roost.server.catalog.db import Database
from roost.server.catalog.migrate import upgrade
from roost.server.clock import Clock, utcnow
from roost.server.config import ServerSettings
from roost.server.orgrepo import OrgRepositories
from roost.server.scheduler.loop import run_scheduler
from roost.server.security import SecretBox, load_master_key
from roost.server.state import ServerState
from roost.server.web import routes as web_routes
from roost.storage.url import open_backend

API_PREFIX = "/api/v1"
_ROUTERS = (
    auth,
    admin_tokens,
    admin_agents,
    admin_policies,
    admin_sets,
    admin_jobs,
    admin_snapshots,
    admin_restores,
    admin_org,
    agent,
    storage,
)


def prepare_state(settings: ServerSettings, clock: Clock = utcnow) -> ServerState:
    """Home directory, master key, catalog schema, storage and the first-start objects."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.storage_url is None:
        Path(settings.storage_location).mkdir(parents=True, exist_ok=True, mode=0o700)
    box = SecretBox(load_master_key(settings.home))
    db = Database(settings.database_url)
    upgrade(db)
    backend = open_backend(settings.storage_location)
    boot = bootstrap(db, backend, box, clock)
    repos = OrgRepositories(backend, db, box)
    return ServerState(settings=settings, db=db, secrets=box, repos=repos, clock=clock, boot=boot)


def create_app(settings: ServerSettings, *, state: ServerState | None = None) -> FastAPI:
    server = state or prepare_state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.repos.open_all_in_background()  # the first job need not wait for a KDF
        stop = asyncio.Event()
        task = None
        if settings.scheduler_enabled:
            task = asyncio.create_task(run_scheduler(server, stop), name="roost-scheduler")
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            server.db.dispose()

    app = FastAPI(title="Roost control plane", version=__version__, lifespan=lifespan)
    app.state.roost = server
    errors.install(app)
    for module in _ROUTERS:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(web_routes.router)
    app.mount("/static", StaticFiles(directory=web_routes.STATIC), name="static")
    return app
