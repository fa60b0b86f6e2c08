"""Errors the server answers with; each carries its HTTP status and says what to do.

RoostError
└── ApiError                    400: the request asks for something impossible
    ├── NotAuthenticated        401: no, unknown or expired credentials
    ├── PermissionDenied        403: authenticated, but not allowed to do this
    ├── NotFound                404: no such object (the message names it)
    ├── Conflict                409: clashes with the current state
    │   ├── PathsOverlap        a backup set's paths overlap another set of the same agent
    │   └── IllegalTransition   a job cannot move from its state to the one asked for
    ├── PreconditionFailed      412: a storage object already exists
    ├── PayloadTooLarge         413: an upload exceeds the server's limit
    └── RangeNotSatisfiable     416: a read starts at or past the end of an object

Engine and storage errors (UsageError, ObjectNotFound, ...) are mapped in ``api/errors.py``.
"""

from __future__ import annotations

from roost.errors import RoostError


class ApiError(RoostError):
    """The request cannot be carried out."""

    status_code = 400


class NotAuthenticated(ApiError):
    """Log in first (POST /api/v1/login) and send `Authorization: Bearer <token>`."""

    status_code = 401


class PermissionDenied(ApiError):
    """Your role does not allow this; ask an admin."""

    status_code = 403


class NotFound(ApiError):
    """No such object."""

    status_code = 404


class Conflict(ApiError):
    """The request clashes with the current state."""

    status_code = 409


class PathsOverlap(Conflict):
    """The paths overlap another backup set of the same agent."""


class IllegalTransition(Conflict):
    """The job cannot move to that state."""


class PreconditionFailed(ApiError):
    """The object already exists and objects are never overwritten."""

    status_code = 412


class PayloadTooLarge(ApiError):
    """The upload is larger than the server accepts."""

    status_code = 413


class RangeNotSatisfiable(ApiError):
    """The range starts at or past the end of the object."""

    status_code = 416
