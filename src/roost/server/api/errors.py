"""Every error leaves the API as ``{"detail": "<what went wrong and what to do>"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from roost.errors import (
    ObjectExists,
    ObjectNotFound,
    RepositoryError,
    RoostError,
    StorageError,
    UsageError,
)
from roost.server.errors import ApiError, NotAuthenticated

log = logging.getLogger(__name__)


def status_for(exc: RoostError) -> int:
    if isinstance(exc, ApiError):
        return exc.status_code
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, ObjectNotFound):
        return 404
    if isinstance(exc, ObjectExists):
        return 409
    if isinstance(exc, StorageError):
        return 503  # the storage backend is down or refusing: try again later
    if isinstance(exc, RepositoryError):
        return 500
    return 400


def _roost_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RoostError)
    status = status_for(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_validation(exc)}, status_code=422)


def describe_validation(exc: RequestValidationError) -> str:
    """One readable line per problem, e.g. ``body.paths.0: '/x' is not an absolute path``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        if error.get("type") == "extra_forbidden":
            parts.append(f"{where}: unknown field; remove it (check its spelling)")
            continue
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "the request is malformed"


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RoostError, _roost_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
